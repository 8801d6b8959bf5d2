"""The teacher: labelled examples proposed by the sampling policy from templates and fillers (ARTE).

    teacher = Teacher(templates_from(train), fillers_from(train), voices=["flite:slt", ...], snrs=[0, 10, 20])
    examples = teacher.propose(64, generator)     # [Example(record, choice)], choice = {"intent", "voice", "snr"}

The policy picks each example's intent, voice and SNR; the example's template is one of that intent's,
drawn uniformly, and each slot gets a filler of its type drawn uniformly (the template's own filler among
them). The choices are kept with the record: they are what alignment updates the policy on.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

import torch

from components.arte.policy import Choice, SamplingPolicy
from components.arte.templates import GENERATED_ID_BASE, Slot, Template, fill
from components.data.slurp import SlurpRecord


@dataclass(frozen=True)
class Example:
    record: SlurpRecord
    choice: Choice


class Teacher:
    def __init__(self, templates: Sequence[Template], fillers: dict[str, list[str]], voices: Sequence[str], snrs: Sequence[float]) -> None:
        if not templates:
            raise ValueError("no templates: the teacher needs labelled records with entity slots")
        self.by_intent: dict[str, list[Template]] = defaultdict(list)
        for template in templates:
            self.by_intent[template.intent].append(template)
        self.fillers = fillers
        self.policy = SamplingPolicy({"intent": sorted(self.by_intent), "voice": list(voices), "snr": [f"{s:g}" for s in snrs]})
        self._next_id = GENERATED_ID_BASE

    def propose(self, n: int, generator: torch.Generator) -> list[Example]:
        examples = []
        for choice in self.policy.sample(n, generator):
            options = self.by_intent[choice["intent"]]
            template = options[int(torch.randint(len(options), (), generator=generator))]
            values = [self._pick(slot, generator) for slot in template.parts if isinstance(slot, Slot)]
            examples.append(Example(fill(template, values, self._next_id), choice))
            self._next_id += 1
        return examples

    def _pick(self, slot: Slot, generator: torch.Generator) -> str:
        values = self.fillers.get(slot.type) or [slot.original]
        return values[int(torch.randint(len(values), (), generator=generator))]
