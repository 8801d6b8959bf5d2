"""Training memory that does not depend on the device or the allocator: what autograd saves for backward."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def saved_for_backward_mib(model: nn.Module, forward: Callable[[], torch.Tensor]) -> float:
    """MiB of the tensors autograd saves while ``forward()`` builds its graph (each storage once,
    the model's parameters excluded); runs backward and clears the gradients afterwards."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = forward()
    if loss.requires_grad:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(saved.values()) / 2**20


def adamw_state_mib(params: list[torch.Tensor]) -> float:
    """Gradients and AdamW's two moments of ``params``: 3 x 4 bytes a scalar (fp32)."""
    return sum(p.numel() for p in params) * 12 / 2**20
