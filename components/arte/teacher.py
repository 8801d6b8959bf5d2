"""The teacher: labelled examples proposed by the sampling policy from templates and fillers (ARTE).

    teacher = Teacher(templates_from(train), fillers_from(train), voices=["flite-slt-p+0-r1", ...], snrs=[0, 10, 20],
                      noises=["white", "babble"], exclude=test_and_preference_sentences)
    examples = teacher.propose(64, generator)     # [Example(record, choice)], choice = {"intent", "voice", "noise", "snr"}

The policy picks each example's intent, voice, noise and SNR; the example's template is one of that
intent's, drawn uniformly, and each slot gets a filler of its type drawn uniformly (the template's own
filler among them). A sentence in ``exclude`` (e.g. every test and preference-set sentence: re-filling a
train template can rebuild one of them) is drawn again, and a template that can only make excluded
sentences is left out (``dropped``; an intent without templates left is not offered). The choices are
kept with the record: they are what alignment updates the policy on.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

from components.arte.policy import Choice, SamplingPolicy
from components.arte.templates import GENERATED_ID_BASE, Slot, Template, fill
from components.data.slurp import SlurpRecord

MAX_DRAWS = 50  # draws per example before the teacher gives up on an intent whose sentences are all excluded
ENUMERATE_UP_TO = 256  # templates with at most this many fillings are checked against exclude one by one


def normal_text(sentence: str) -> str:
    return " ".join(sentence.lower().split())


@dataclass(frozen=True)
class Example:
    record: SlurpRecord
    choice: Choice


class Teacher:
    def __init__(
        self, templates: Sequence[Template], fillers: dict[str, list[str]], voices: Sequence[str], snrs: Sequence[float],
        noises: Sequence[str] = ("white",), exclude: Iterable[str] = (),
    ) -> None:
        self.fillers = fillers
        self.exclude = {normal_text(s) for s in exclude}
        self.dropped = [t for t in templates if not self._can_make_new(t)]
        if len(self.dropped) == len(templates):
            raise ValueError(f"no templates: the teacher needs labelled records with entity slots ({len(self.dropped)} make only excluded sentences)")
        self.by_intent: dict[str, list[Template]] = defaultdict(list)
        for template in templates:
            if template not in self.dropped:
                self.by_intent[template.intent].append(template)
        self.policy = SamplingPolicy({"intent": sorted(self.by_intent), "voice": list(voices), "noise": list(noises), "snr": [f"{s:g}" for s in snrs]})
        self._next_id = GENERATED_ID_BASE

    def propose(self, n: int, generator: torch.Generator) -> list[Example]:
        examples = []
        for choice in self.policy.sample(n, generator):
            record = self._record(choice["intent"], generator)
            examples.append(Example(record, choice))
            self._next_id += 1
        return examples

    def _record(self, intent: str, generator: torch.Generator) -> SlurpRecord:
        options = self.by_intent[intent]
        for _ in range(MAX_DRAWS):
            template = options[int(torch.randint(len(options), (), generator=generator))]
            record = fill(template, [self._pick(slot, generator) for slot in template.parts if isinstance(slot, Slot)], self._next_id)
            if record.sentence not in self.exclude:
                return record
        raise ValueError(f"intent {intent!r}: {MAX_DRAWS} draws from its {len(options)} template(s) gave only excluded sentences")

    def _can_make_new(self, template: Template) -> bool:
        options = [self.fillers.get(slot.type) or [slot.original] for slot in template.parts if isinstance(slot, Slot)]
        if not self.exclude or math.prod(map(len, options)) > ENUMERATE_UP_TO:
            return True
        return any(fill(template, list(values), 0).sentence not in self.exclude for values in itertools.product(*options))

    def _pick(self, slot: Slot, generator: torch.Generator) -> str:
        values = self.fillers.get(slot.type) or [slot.original]
        return values[int(torch.randint(len(values), (), generator=generator))]
