"""Architecture weights over choice cells: Gumbel-softmax sampling, temperature annealing,
the parameter penalty, and deriving the discrete architecture.

    alpha (n_cells, K) logits            one row a cell, one column a candidate (same space for all cells)
    sample: gumbel_softmax(alpha, tau)   hard: one-hot + straight-through; soft: the relaxed weights
    penalty = lambda * sum_cells sum_k softmax(alpha)_ck * cost_ck / full_ft_params
              cost = the candidate's trainable parameters; frozen costs frozen_cost x the cell's
              fine-tune size (the paper's "virtual" cost: 0 makes frozen free)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from components.nas.cell import ChoiceCell


class Architecture(nn.Module):
    def __init__(self, cells: Mapping[str, ChoiceCell], frozen_cost: float = 0.0) -> None:
        super().__init__()
        spaces = {cell.candidates for cell in cells.values()}
        if len(spaces) != 1:
            raise ValueError(f"every cell must have the same candidates, got {sorted(spaces)}")
        self.names = list(cells)
        self.candidates = next(iter(spaces))
        self.cells = dict(cells)  # a plain dict, not submodules: the cells live in the model
        self.alpha = nn.Parameter(torch.zeros(len(cells), len(self.candidates)))  # uniform start
        full = [cell.backbone_size() for cell in cells.values()]
        costs = []
        for cell, size in zip(cells.values(), full):
            c = cell.candidate_costs()
            costs.append([frozen_cost * size if k == "frozen" else c[k] for k in self.candidates])
        self.register_buffer("costs", torch.tensor(costs, dtype=torch.float64))  # (n_cells, K) trainable parameters
        self.full_params = float(sum(full))  # full fine-tuning's trainable parameters over the cells

    def candidate_parameters(self, choices: Mapping[str, str] | None = None) -> list[nn.Parameter]:
        """The parameters the chosen candidates train (every candidate's when ``choices`` is None), each once."""
        params = {}
        for name, cell in self.cells.items():
            per_candidate = cell.candidate_parameters()
            for candidate in (cell.candidates if choices is None else [choices[name]]):
                params |= {id(p): p for p in per_candidate[candidate]}
        return list(params.values())

    def probabilities(self) -> torch.Tensor:
        return self.alpha.softmax(-1)  # (n_cells, K)

    def sample(self, tau: float, hard: bool = True) -> torch.Tensor:
        """Draw cell weights and hand them to the cells; returns them (n_cells, K)."""
        weights = F.gumbel_softmax(self.alpha, tau=tau, hard=hard, dim=-1)
        for i, name in enumerate(self.names):
            cell = self.cells[name]
            cell.mode, cell.weights = ("hard" if hard else "soft"), weights[i]
        return weights

    def expected_parameters(self) -> torch.Tensor:
        return (self.probabilities().double() * self.costs).sum()

    def penalty(self, lam: float) -> torch.Tensor:
        """lambda x expected trainable parameters / full fine-tuning's (a scalar with gradient to alpha)."""
        return (lam * self.expected_parameters() / self.full_params).float()

    def derive(self) -> dict[str, str]:
        """The discrete architecture: each cell's most probable candidate."""
        best = self.alpha.argmax(-1).tolist()
        return {name: self.candidates[k] for name, k in zip(self.names, best)}

    def fix(self, choices: Mapping[str, str]) -> None:
        """Put every cell in fixed mode on its chosen candidate."""
        missing = set(self.names) - set(choices)
        if missing:
            raise ValueError(f"no choice for cells {sorted(missing)}")
        for name in self.names:
            cell = self.cells[name]
            if choices[name] not in cell.candidates:
                raise ValueError(f"cell {name!r}: {choices[name]!r} is not one of {cell.candidates}")
            cell.mode, cell.fixed, cell.weights = "fixed", cell.candidates.index(choices[name]), None

    def trainable_fraction(self, choices: Mapping[str, str]) -> float:
        """Trainable parameters of a derived architecture over full fine-tuning's (frozen counts 0 here)."""
        total = sum(self.costs[i, self.candidates.index(choices[n])].item() for i, n in enumerate(self.names) if choices[n] != "frozen")
        return total / self.full_params

    def to_json(self, history: list[list[list[float]]] | None = None) -> str:
        return json.dumps({
            "candidates": list(self.candidates),
            "cells": self.names,
            "architecture": self.derive(),
            "probabilities": self.probabilities().tolist(),
            "trainable_fraction": self.trainable_fraction(self.derive()),
            "history": history or [],
        }, indent=2)


def temperature(step: int, total_steps: int, tau_max: float = 5.0, tau_min: float = 0.5) -> float:
    """Exponential annealing from tau_max at step 0 to tau_min at total_steps (then flat)."""
    if total_steps <= 0:
        return tau_min
    t = min(step, total_steps) / total_steps
    return tau_max * math.exp(t * math.log(tau_min / tau_max))
