"""BitFit as per-task bias offsets: output + delta_task along the channel dimension.

Training delta from zero is training the bias (same gradient, see the parity
test), but each task keeps its own and the backbone stays shared. Biases
inside fused kernels (GRU/LSTM) are out of reach and left out.
"""

from __future__ import annotations

import torch
from torch import nn

from components.adapters.attention import ProjectionSlice, explicit_attention
from components.adapters.base import AdapterLayer, AdapterMethod
from components.adapters.bitfit.config import BitFitConfig
from components.adapters.registry import register
from components.adapters.tasks import per_task

CHANNEL_LAST = (nn.Linear, ProjectionSlice, nn.LayerNorm)
CHANNEL_FIRST = (nn.Conv1d, nn.Conv2d, nn.modules.batchnorm._BatchNorm)  # (B, C, ...)


class BiasOffsetLayer(AdapterLayer):
    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        self.channels = base.bias.shape[0]
        self.channel_first = isinstance(base, CHANNEL_FIRST)

    def new_task(self, task: str) -> nn.Module:
        module = nn.Module()
        module.bias = nn.Parameter(torch.zeros(self.channels))
        return module

    def delta(self, task: str, x: torch.Tensor) -> torch.Tensor:
        bias = self.tasks[task].bias
        if self.channel_first:
            bias = bias.view(-1, *([1] * (x.dim() - 2)))  # (C, 1, ...)
        return bias.expand_as(x)


@register
class BitFitMethod(AdapterMethod):
    config_cls = BitFitConfig
    layer_cls = BiasOffsetLayer

    def select(self, model, path, module):
        join = lambda sub: f"{path}.{sub}" if sub else path  # noqa: E731
        for sub, m in list(module.named_modules()):
            if isinstance(m, nn.MultiheadAttention) and m.in_proj_bias is not None:
                explicit_attention(model, join(sub))
        module = model.get_submodule(path)
        found = [
            (join(sub), m)
            for sub, m in module.named_modules()
            if isinstance(m, CHANNEL_LAST + CHANNEL_FIRST) and getattr(m, "bias", None) is not None and not isinstance(m, AdapterLayer)
        ]
        if not found:
            raise TypeError(f"bitfit: target '{path}' ({type(module).__name__}) has no Linear, Conv or LayerNorm with a bias")
        return found
