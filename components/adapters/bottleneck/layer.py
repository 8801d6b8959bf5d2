"""Bottleneck adapters (Houlsby, Pfeiffer, gated, VL-adapter shared)."""

from __future__ import annotations

import torch
from torch import nn

from components.adapters.base import AdapterLayer, AdapterMethod, first_tensor, output_features
from components.adapters.bottleneck.config import ACTIVATIONS, BottleneckConfig, GatedConfig, HoulsbyConfig, PfeifferConfig, SharedConfig
from components.adapters.registry import register
from components.adapters.tasks import per_task


class Bottleneck(nn.Module):
    """x (..., d) -> up(act(down(x))) (..., d); up starts at zero so the adapter starts as a no-op."""

    def __init__(self, d: int, hidden: int, activation: str, gated: bool, zero_init: bool = True) -> None:
        super().__init__()
        self.down = nn.Linear(d, hidden)
        self.act = getattr(nn, ACTIVATIONS[activation])()
        self.up = nn.Linear(hidden, d)
        if zero_init:
            nn.init.zeros_(self.up.weight)
            nn.init.zeros_(self.up.bias)
        self.gate = nn.Parameter(torch.zeros(1)) if gated else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.up(self.act(self.down(x)))
        return y * torch.sigmoid(self.gate) if self.gate is not None else y


class BottleneckLayer(AdapterLayer):
    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        cfg = self.adapter_config
        self.width = output_features(base)
        self.hidden = max(1, self.width // cfg.reduction_factor)
        self.shared = self._bottleneck() if cfg.share_across_tasks else None

    def _bottleneck(self) -> Bottleneck:
        cfg = self.adapter_config
        return Bottleneck(self.width, self.hidden, cfg.activation, cfg.gated, zero_init=cfg.residual)

    def new_task(self, task: str) -> nn.Module:
        return nn.Module() if self.shared is not None else self._bottleneck()

    def _adapter(self, task: str) -> nn.Module:
        return self.shared if self.shared is not None else self.tasks[task]

    def adapt(self, output: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
        source = output if self.adapter_config.placement == "sequential" else first_tensor(args, kwargs)
        if source.shape[-1] != self.width:
            raise ValueError(f"adapter at '{self.path}': input width {source.shape[-1]} != output width {self.width}; use placement='sequential'")
        y = per_task(self.method.router, source, self.batch_dim, lambda task, x: self._adapter(task)(x))
        return output + y if self.adapter_config.residual else y


@register
class BottleneckMethod(AdapterMethod):
    config_cls = BottleneckConfig
    layer_cls = BottleneckLayer


@register
class HoulsbyMethod(BottleneckMethod):
    config_cls = HoulsbyConfig


@register
class PfeifferMethod(BottleneckMethod):
    config_cls = PfeifferConfig


@register
class GatedMethod(BottleneckMethod):
    config_cls = GatedConfig


@register
class SharedMethod(BottleneckMethod):
    config_cls = SharedConfig
