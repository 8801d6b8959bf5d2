"""Hierarchical Recurrent Adapter (Munkhdalai et al. 2024, arXiv 2403.19709).

Not peft's ``HRA`` (Householder reflections): a different method under a similar name.

ONE controller, an IndRNN that recurs over depth, is shared by every adapted
layer and every task; each task owns only a small head (method-level,
``tasks[task]``). For adapted layer l (targets in order, ``depth`` l) with
output x_l (..., d), per frame or token:

    h_l = relu(W x_l + u * h_{l-1} + b)      W (r, d), u (r,) elementwise, b (r,); h_{-1} = 0
    y_l = x_l + head_task(h_l)               head: Linear r -> d, or r -> ffn_dim -> d

The state is reset at depth 0 on every forward pass and carried from layer to
layer inside the method, so the targets must run in target order (one full
pass, as a layer stack does). Heads end in a zero-initialised Linear: the
adapted model starts exactly equal to the backbone. In a mixed batch the
controller runs once on all rows (it is task-independent) and each row goes
through its own task's head.
"""

from __future__ import annotations

import torch
from torch import nn

from components.adapters.base import AdapterLayer, AdapterMethod, output_features
from components.adapters.hra.config import HRAConfig
from components.adapters.registry import register
from components.adapters.tasks import per_task


class IndRNNController(nn.Module):
    """h = relu(W x + u * h_prev + b): an independently recurrent cell (each unit sees only its own past)."""

    def __init__(self, d: int, r: int) -> None:
        super().__init__()
        self.W = nn.Linear(d, r)  # weight W (r, d), bias b (r,)
        # |u| < 1 keeps the state bounded over depth (IndRNN's usual range for short recurrences)
        self.u = nn.Parameter(torch.rand(r))

    def forward(self, x: torch.Tensor, h_prev: torch.Tensor | None) -> torch.Tensor:
        z = self.W(x)  # (..., r)
        if h_prev is not None:
            z = z + self.u * h_prev
        return torch.relu(z)


def make_head(r: int, d: int, kind: str, ffn_dim: int) -> nn.Module:
    """A task's head r -> d; its last Linear starts at zero (no residual at start)."""
    last = nn.Linear(r if kind == "linear" else ffn_dim, d)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return last if kind == "linear" else nn.Sequential(nn.Linear(r, ffn_dim), nn.ReLU(), last)


class HRALayer(AdapterLayer):
    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        self.width = output_features(base)

    def new_task(self, task: str) -> nn.Module:
        return nn.Module()  # nothing per layer: the task's head lives in the method

    def adapt(self, output: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        h = self.method.step(self.depth, output, self.path)  # (..., r), the same for every task
        return output + per_task(self.method.router, h, self.batch_dim, lambda task, hh: self.method.tasks[task](hh))


@register
class HRAMethod(AdapterMethod):
    config_cls = HRAConfig
    layer_cls = HRALayer

    def __init__(self, config: HRAConfig, name: str) -> None:
        super().__init__(config, name)
        self.width = 0
        self.last_depth = -1
        self._state: tuple[int, torch.Tensor] | None = None  # (depth, h) of the last layer run in this pass

    def prepare(self, targets: list[tuple[str, nn.Module]]) -> None:
        widths = {path: output_features(module) for path, module in targets}
        if len(set(widths.values())) != 1:
            raise ValueError(f"hra: one controller reads every target, so they must share one width; got {widths}. Apply one hra per backbone.")
        self.width = next(iter(widths.values()))
        self.last_depth = len(targets) - 1
        self.shared["controller"] = IndRNNController(self.width, self.config.r)

    def new_task(self, task: str) -> nn.Module:
        return make_head(self.config.r, self.width, self.config.head, self.config.ffn_dim)

    def step(self, depth: int, x: torch.Tensor, path: str = "") -> torch.Tensor:
        """h_depth from the layer output x (..., d) and the state the previous depth left; resets at depth 0."""
        h_prev = None
        if depth > 0:
            if self._state is None or self._state[0] != depth - 1:
                ran = "nothing" if self._state is None else f"depth {self._state[0]}"
                raise RuntimeError(
                    f"hra: target '{path}' (depth {depth}) ran after {ran} in this pass; the controller recurs over the "
                    f"targets in order 0..{self.last_depth}, so run them in one pass, in order (no re-run, no skipped target)"
                )
            h_prev = self._state[1]
            if h_prev.shape[:-1] != x.shape[:-1]:
                raise RuntimeError(f"hra: target '{path}' output {tuple(x.shape)} does not line up with the state {tuple(h_prev.shape)} of depth {depth - 1}")
        h = self.shared["controller"](x, h_prev)
        self._state = None if depth == self.last_depth else (depth, h)  # drop the graph reference after the last layer
        return h
