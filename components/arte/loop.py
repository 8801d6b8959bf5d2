"""ARTE's loop: the teacher proposes candidate batches, the student's gain ranks them, the teacher is aligned.

    history = tailor(teacher, student, update, item_losses, ArteConfig(rounds=4), generator)
    tailored = teacher.propose(n, generator)          # the aligned teacher's training data

Per round: ``candidates`` batches of ``batch_size`` examples from the current policy; each one's gain on the
preference set after ``update(student copy, examples)``; the best ``pairs`` against the worst; one DPO
alignment of the policy on their choices. ``item_losses(model, items)`` is the model's loss on each
preference item (items: indices into the preference set, None = all of it). After the first round only the
``preference_items`` items whose losses varied most across its candidates are measured: the rest say
little about which data helps. ``student`` is never changed here: it is trained afterwards on the
tailored data. history: one record per round (gains, pairs, items measured, the policy after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch

from components.arte.policy import AlignConfig, align
from components.arte.preferences import discriminative_items, measure_gains, preference_pairs
from components.arte.teacher import Example, Teacher

ItemLosses = Callable[[torch.nn.Module, Optional[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class ArteConfig:
    rounds: int = 4
    candidates: int = 8  # candidate batches a round
    batch_size: int = 16  # examples a candidate batch
    pairs: int = 2  # (best, worst) pairs a round
    min_margin: float = 0.0  # gains closer than this make no pair
    preference_items: int | None = None  # items measured after round 1 (the most discriminative); None = all
    align: AlignConfig = field(default_factory=AlignConfig)

    @classmethod
    def from_dict(cls, d: dict) -> "ArteConfig":
        return cls(**{k: v for k, v in d.items() if k != "align"}, align=AlignConfig(**d.get("align", {})))


def tailor(
    teacher: Teacher,
    student: torch.nn.Module,
    update: Callable[[torch.nn.Module, Sequence[Example]], None],
    item_losses: ItemLosses,
    cfg: ArteConfig,
    generator: torch.Generator,
    on_round: Callable[[dict], None] | None = None,
) -> list[dict]:
    history = []
    items: torch.Tensor | None = None  # all preference items in round 1
    for round_index in range(cfg.rounds):
        candidates = [teacher.propose(cfg.batch_size, generator) for _ in range(cfg.candidates)]
        gains, losses = measure_gains(student, candidates, update, lambda model: item_losses(model, items))
        pairs = preference_pairs(candidates, gains, cfg.pairs, cfg.min_margin)
        if pairs:
            align(teacher.policy, [([e.choice for e in chosen], [e.choice for e in rejected]) for chosen, rejected in pairs], cfg.align)
        record = {"round": round_index + 1, "gains": gains, "pairs": len(pairs), "items": losses.shape[1], "policy": teacher.policy.probabilities()}
        history.append(record)
        if on_round is not None:
            on_round(record)
        if items is None and cfg.preference_items is not None and cfg.preference_items < losses.shape[1]:
            items = discriminative_items(losses, cfg.preference_items)
    return history
