"""Compacter (Karimi Mahabadi et al. 2021): bottleneck adapters built from PHM layers.

A PHM layer's weight is a sum of Kronecker products, W = sum_{i=1..n} A_i kron B_i
(out, in), with A_i (n, n) and B_i (out/n, in/n). The A_i ("PHM rule") are shared
by every adapter layer (and by default by every task), the B_i belong to one
layer and task; Compacter factors them further, B_i = s_i t_i^T with rank r
(``low_rank``; 0 keeps full B_i: the PHM-Adapter). Per layer and task that is
r (out + in) parameters a projection instead of out * in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from components.adapters.base import AdapterMethod, output_features
from components.adapters.bottleneck.layer import Bottleneck, BottleneckLayer, BottleneckMethod
from components.adapters.compacter.config import CompacterConfig
from components.adapters.registry import register


def kron_sum(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """sum_i kron(A[i], B[i]): A (n, a1, a2), B (n, b1, b2) -> (a1*b1, a2*b2), in one einsum."""
    n, a1, a2 = A.shape
    _, b1, b2 = B.shape
    # kron(A_i, B_i)[a*b1 + c, b*b2 + e] = A_i[a, b] * B_i[c, e]
    return torch.einsum("iab,ice->acbe", A, B).reshape(a1 * b1, a2 * b2)


class PHMRule(nn.Module):
    """The A_i (n, n, n), shared by every PHM layer that uses it."""

    def __init__(self, n: int) -> None:
        super().__init__()
        # variance 1/n: then var(W) = n * var(A) * var(B) = var(B), so B's init sets W's scale
        self.A = nn.Parameter(torch.randn(n, n, n) / math.sqrt(n))


class PHMLinear(nn.Module):
    """A Linear (in -> out) whose weight is kron_sum(rule.A, B); B per layer, full (n, out/n, in/n) or s @ t of rank r."""

    def __init__(self, in_features: int, out_features: int, rule: PHMRule, rank: int, zero_init: bool = False) -> None:
        super().__init__()
        n = rule.A.shape[0]
        if in_features % n or out_features % n:
            raise ValueError(f"phm_dim {n} must divide both widths of a PHM layer ({in_features} -> {out_features})")
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self._rule = [rule]  # in a list: the rule's parameters stay registered where the method put them
        p, q = out_features // n, in_features // n
        std = math.sqrt(2.0 / (in_features + out_features))  # Glorot for the whole W
        if rank == 0:
            self.B = nn.Parameter(torch.zeros(n, p, q) if zero_init else torch.randn(n, p, q) * std)
        else:
            # var(s t^T) = rank * var(s) * var(t) = std^2; zero-init zeroes s only, so t still gets a gradient
            factor = (std**2 / rank) ** 0.25
            self.s = nn.Parameter(torch.zeros(n, p, rank) if zero_init else torch.randn(n, p, rank) * factor)
            self.t = nn.Parameter(torch.randn(n, rank, q) * factor)
        self.bias = nn.Parameter(torch.zeros(out_features))

    @property
    def rule(self) -> PHMRule:
        return self._rule[0]

    @property
    def weight(self) -> torch.Tensor:
        """The dense (out, in) weight."""
        B = self.B if self.rank == 0 else self.s @ self.t  # (n, out/n, in/n)
        return kron_sum(self.rule.A, B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, n={self.rule.A.shape[0]}, rank={self.rank or 'full'}"


class PHMBottleneck(Bottleneck):
    """The bottleneck adapter (activation, gate, forward) with PHM projections; up starts at zero when zero_init."""

    def __init__(self, d: int, hidden: int, activation: str, gated: bool, zero_init: bool, rule: PHMRule, rank: int) -> None:
        super().__init__(d, hidden, activation, gated, zero_init)
        self.down = PHMLinear(d, hidden, rule, rank)
        self.up = PHMLinear(hidden, d, rule, rank, zero_init=zero_init)


class CompacterLayer(BottleneckLayer):
    def _bottleneck(self, task: str | None = None) -> PHMBottleneck:
        cfg = self.adapter_config
        rule = self.method.rule(task)
        return PHMBottleneck(self.width, self.hidden, cfg.activation, cfg.gated, cfg.residual, rule, cfg.low_rank)

    def new_task(self, task: str) -> nn.Module:
        return nn.Module() if self.shared is not None else self._bottleneck(task)


@register
class CompacterMethod(BottleneckMethod):
    config_cls = CompacterConfig
    layer_cls = CompacterLayer

    def prepare(self, targets: list[tuple[str, nn.Module]]) -> None:
        cfg, n = self.config, self.config.phm_dim
        for path, module in targets:
            width = output_features(module)
            hidden = max(1, width // cfg.reduction_factor)
            if width % n or hidden % n:
                raise ValueError(
                    f"compacter: phm_dim {n} must divide the width {width} of '{path}' and its bottleneck width {hidden} "
                    f"(= {width} // reduction_factor {cfg.reduction_factor}); pick a phm_dim that divides both"
                )
        if cfg.share_phm_rule:
            self.shared["phm_rule"] = PHMRule(n)

    def new_task(self, task: str) -> nn.Module | None:
        return None if self.config.share_phm_rule else PHMRule(self.config.phm_dim)

    def rule(self, task: str | None) -> PHMRule:
        """The A_i a task's PHM layers use: the shared ones, or the task's own."""
        if self.config.share_phm_rule:
            return self.shared["phm_rule"]
        if task is None:
            raise RuntimeError("compacter: share_phm_rule=False gives each task its own A_i; a shared adapter needs share_phm_rule=True")
        return self.tasks[task]
