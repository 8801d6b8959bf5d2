"""Hierarchical Recurrent Adapter (Munkhdalai et al. 2024, arXiv 2403.19709).

Not peft's ``HRA`` (Householder reflections): a different method under a similar name.

ONE controller, an IndRNN that recurs over depth, is shared by every adapted
layer and every task; each task owns only a small head (method-level,
``tasks[task]``). For adapted layer l (targets in order, ``depth`` l) with
output x_l (..., d), per frame or token:

    h_l = relu(W x_l + u * h_{l-1} + b)      W (r, d), u (r,) elementwise, b (r,)
    y_l = x_l + head_task(h_l)               head: Linear r -> d, or r -> ffn_dim -> d

Stacks. Targets that share a parent module form a stack (Whisper: the encoder's
layers, then the decoder's). Within a stack the state runs from layer to layer
on one sequence. Where one stack ends and the next begins the sequences differ
(encoder frames (B, T, d), decoder tokens (B, S, d)), so ``cross_stack`` says how
the recurrence crosses: ``reset`` starts the next stack at h = 0; ``pooled``
starts it from the previous stack's last state averaged over positions,
(B, 1, r), broadcast over the next stack's positions. That carried state stays
until the first stack runs again, so every pass of the decoder (each decoding
step on a KV cache) starts from the same encoder summary. ``controller:
per_stack`` gives each stack its own IndRNN (the heads stay one a task).

The targets of a stack must run in order, in one pass (a layer stack does).
Heads end in a zero-initialised Linear: the adapted model starts exactly equal
to the backbone. In a mixed batch the controller runs once on all rows (it is
task-independent) and each row goes through its own task's head.
"""

from __future__ import annotations

import torch
from torch import nn

from components.adapters.base import AdapterLayer, AdapterMethod, output_features
from components.adapters.hra.config import HRAConfig
from components.adapters.registry import register
from components.adapters.tasks import per_task


class IndRNNController(nn.Module):
    """h = relu(W x + u * h_prev + b): an independently recurrent cell (each unit sees only its own past).
    ``input_norm``: x is layer-normalised (no parameters) first."""

    def __init__(self, d: int, r: int, input_norm: bool = False) -> None:
        super().__init__()
        self.W = nn.Linear(d, r)  # weight W (r, d), bias b (r,)
        # |u| < 1 keeps the state bounded over depth (IndRNN's usual range for short recurrences)
        self.u = nn.Parameter(torch.rand(r))
        self.input_norm = input_norm

    def forward(self, x: torch.Tensor, h_prev: torch.Tensor | None) -> torch.Tensor:
        if self.input_norm:
            x = nn.functional.layer_norm(x, x.shape[-1:])
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


def stacks_of(paths: list[str]) -> list[int]:
    """The stack index of each target path: targets with one parent module form a stack, numbered in order."""
    parents: list[str] = []
    out = []
    for path in paths:
        parent = path.rpartition(".")[0]
        if parent not in parents:
            parents.append(parent)
        out.append(parents.index(parent))
    return out


def pool_positions(h: torch.Tensor, batch_dim: int) -> torch.Tensor:
    """(..., r) -> the mean over every dimension but the batch and the units, kept as size 1: (B, 1, r) for (B, T, r)."""
    dims = [d for d in range(h.dim() - 1) if d != batch_dim % h.dim()]
    return h.mean(dim=dims, keepdim=True) if dims else h


class HRALayer(AdapterLayer):
    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        self.width = output_features(base)

    def new_task(self, task: str) -> nn.Module:
        return nn.Module()  # nothing per layer: the task's head lives in the method

    def adapt(self, output: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        h = self.method.step(self.depth, output, self.path, self.batch_dim)  # (..., r), the same for every task
        return output + per_task(self.method.router, h, self.batch_dim, lambda task, hh: self.method.tasks[task](hh))


@register
class HRAMethod(AdapterMethod):
    config_cls = HRAConfig
    layer_cls = HRALayer

    def __init__(self, config: HRAConfig, name: str) -> None:
        super().__init__(config, name)
        self.width = 0
        self.stack: list[int] = []  # depth -> stack index
        self._state: tuple[int, torch.Tensor] | None = None  # (depth, h) of the last layer run in this stack's pass
        self._carry: dict[int, torch.Tensor] = {}  # stack -> its last state pooled over positions (cross_stack 'pooled')
        self._carry_batch_dim = 0

    def prepare(self, targets: list[tuple[str, nn.Module]]) -> None:
        widths = {path: output_features(module) for path, module in targets}
        if len(set(widths.values())) != 1:
            raise ValueError(f"hra: one controller reads every target, so they must share one width; got {widths}. Apply one hra per backbone.")
        self.width = next(iter(widths.values()))
        self.stack = stacks_of([path for path, _ in targets])
        n_controllers = self.stack[-1] + 1 if self.config.controller == "per_stack" else 1
        for s in range(n_controllers):
            self.shared[self._controller_name(s)] = IndRNNController(self.width, self.config.r, self.config.input_norm)

    @staticmethod
    def _controller_name(stack: int) -> str:
        return "controller" if stack == 0 else f"controller_{stack}"

    def new_task(self, task: str) -> nn.Module:
        return make_head(self.config.r, self.width, self.config.head, self.config.ffn_dim)

    def _first(self, depth: int) -> bool:
        return depth == 0 or self.stack[depth - 1] != self.stack[depth]

    def _last(self, depth: int) -> bool:
        return depth == len(self.stack) - 1 or self.stack[depth + 1] != self.stack[depth]

    def step(self, depth: int, x: torch.Tensor, path: str = "", batch_dim: int = 0) -> torch.Tensor:
        """h_depth from the layer output x (..., d) and the state its predecessor left (see the module docstring)."""
        s = self.stack[depth]
        if self._first(depth):
            h_prev = self._entry_state(s, x, path)
        else:
            if self._state is None or self._state[0] != depth - 1:
                ran = "nothing" if self._state is None else f"depth {self._state[0]}"
                raise RuntimeError(
                    f"hra: target '{path}' (depth {depth}) ran after {ran} in this pass; the controller recurs over a stack's "
                    f"targets in order, so run them in one pass, in order (no re-run, no skipped target)"
                )
            h_prev = self._state[1]
            if h_prev.shape[:-1] != x.shape[:-1]:
                raise RuntimeError(f"hra: target '{path}' output {tuple(x.shape)} does not line up with the state {tuple(h_prev.shape)} of depth {depth - 1}")
        controller = self.shared[self._controller_name(s if self.config.controller == "per_stack" else 0)]
        h = controller(x, h_prev)
        if self._last(depth):
            self._state = None  # drop the graph reference after a stack's last layer
            if s < self.stack[-1] and self.config.cross_stack == "pooled":
                self._carry[s], self._carry_batch_dim = pool_positions(h, batch_dim), batch_dim
        else:
            self._state = (depth, h)
        return h

    def batch_state(self) -> tuple:
        return super().batch_state(), dict(self._carry)  # the decoder's later passes read the encoder's pooled state

    def set_batch_state(self, state: tuple) -> None:
        current, carry = state
        super().set_batch_state(current)
        self._carry = dict(carry)

    def keep_rows(self, index: torch.Tensor) -> None:
        super().keep_rows(index)
        self._carry = {s: c.index_select(self._carry_batch_dim, index.to(c.device)) for s, c in self._carry.items()}

    def _entry_state(self, stack: int, x: torch.Tensor, path: str) -> torch.Tensor | None:
        if stack == 0:
            self._carry.clear()  # a new pass through the first stack: what later stacks read comes from it
            return None
        if self.config.cross_stack == "reset":
            return None
        carry = self._carry.get(stack - 1)
        if carry is None:
            raise RuntimeError(f"hra: target '{path}' starts stack {stack}, which reads the pooled state of stack {stack - 1}; run that stack first")
        try:
            torch.broadcast_shapes(carry.shape[:-1], x.shape[:-1])
        except RuntimeError:
            raise RuntimeError(f"hra: target '{path}' output {tuple(x.shape)} does not line up with the pooled state {tuple(carry.shape)} of stack {stack - 1}") from None
        return carry
