"""The student's preferences over candidate batches (ARTE): its measured gain after a short update.

    gains, item_losses = measure_gains(student, candidates, update, item_losses)
    keep = discriminative_items(item_losses, k=64)        # the preference items that tell candidates apart
    pairs = preference_pairs(candidates, gains)           # [(chosen batch, rejected batch)]

Each candidate batch is tried from the same starting weights: ``update(student, batch)`` trains a copy a few
steps, ``item_losses(student)`` is its loss on every preference item (a slice of nas_val), and the gain is
the mean loss before minus after. ARTE ranks candidates by that gain, pairs the best with the worst, and
keeps the preference items whose loss varies most across candidates: items every candidate helps alike
(or none helps) say nothing about which data to generate.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence, TypeVar

import torch

Batch = TypeVar("Batch")


def measure_gains(
    student: torch.nn.Module,
    candidates: Sequence[Batch],
    update: Callable[[torch.nn.Module, Batch], None],
    item_losses: Callable[[torch.nn.Module], torch.Tensor],
) -> tuple[list[float], torch.Tensor]:
    """-> (gain of each candidate: mean preference loss before minus after its update,
    (candidates, items) losses after each update). ``student`` itself is left unchanged."""
    before = item_losses(student).detach()
    after = []
    for batch in candidates:
        trial = copy.deepcopy(student)
        update(trial, batch)
        after.append(item_losses(trial).detach())
    after_t = torch.stack(after)
    return [float(before.mean() - losses.mean()) for losses in after_t], after_t


def discriminative_items(item_losses: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` preference items whose loss varies most across candidates, (candidates, items) -> (k,)."""
    return item_losses.var(dim=0, unbiased=False).topk(min(k, item_losses.shape[1])).indices.sort().values


def preference_pairs(candidates: Sequence[Batch], gains: Sequence[float], n_pairs: int = 1, min_margin: float = 0.0) -> list[tuple[Batch, Batch]]:
    """The i-th best candidate against the i-th worst, for i < n_pairs, where the gains differ by more than ``min_margin``."""
    if len(candidates) != len(gains):
        raise ValueError(f"{len(candidates)} candidates but {len(gains)} gains")
    order = sorted(range(len(candidates)), key=lambda i: gains[i], reverse=True)
    pairs = []
    for i in range(min(n_pairs, len(order) // 2)):
        best, worst = order[i], order[-1 - i]
        if gains[best] - gains[worst] > min_margin:
            pairs.append((candidates[best], candidates[worst]))
    return pairs
