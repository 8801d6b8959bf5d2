"""ARTE's loop: the teacher proposes candidate batches, the student's gain ranks them, the teacher is aligned.

    history = tailor(teacher, student, update, item_losses, ArteConfig(rounds=4), generator)
    tailored = teacher.propose(n, generator)          # the aligned teacher's training data

Per round: ``candidates`` batches of ``batch_size`` examples from the current policy; each one's gain on the
preference set after ``update(student copy, examples)``; the best ``pairs`` against the worst; one DPO
alignment of the policy on their choices. ``student`` is never changed here: it is trained afterwards on
the tailored data. history: one record per round (gains, pairs, the policy's probabilities after it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from components.arte.policy import AlignConfig, align
from components.arte.preferences import measure_gains, preference_pairs
from components.arte.teacher import Example, Teacher


@dataclass(frozen=True)
class ArteConfig:
    rounds: int = 4
    candidates: int = 8  # candidate batches a round
    batch_size: int = 16  # examples a candidate batch
    pairs: int = 2  # (best, worst) pairs a round
    min_margin: float = 0.0  # gains closer than this make no pair
    align: AlignConfig = field(default_factory=AlignConfig)


def tailor(
    teacher: Teacher,
    student: torch.nn.Module,
    update: Callable[[torch.nn.Module, Sequence[Example]], None],
    item_losses: Callable[[torch.nn.Module], torch.Tensor],
    cfg: ArteConfig,
    generator: torch.Generator,
) -> list[dict]:
    history = []
    for round_index in range(cfg.rounds):
        candidates = [teacher.propose(cfg.batch_size, generator) for _ in range(cfg.candidates)]
        gains, _ = measure_gains(student, candidates, update, item_losses)
        pairs = preference_pairs(candidates, gains, cfg.pairs, cfg.min_margin)
        if pairs:
            align(teacher.policy, [([e.choice for e in chosen], [e.choice for e in rejected]) for chosen, rejected in pairs], cfg.align)
        history.append({"round": round_index + 1, "gains": gains, "pairs": len(pairs), "policy": teacher.policy.probabilities()})
    return history
