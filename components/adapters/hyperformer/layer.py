"""Hyperformer (Karimi Mahabadi et al. 2021, the shared "Hyperformer++" form).

One hypernetwork, shared by every layer and task, writes each adapted module's
bottleneck adapter (down d -> h, up h -> d, and their biases):

    e     = [task embedding (task_embedding_dim) ; layer embedding[depth] (layer_embedding_dim)]
    I     = LayerNorm(projector(e))                     (projected_dim)
    W_down, b_down, W_up, b_up = generators[d](I)       (one generator set per module width d)
    y     = output + W_up act(W_down output + b_down) + b_up

A task owns only its embedding (``tasks[task].embedding``), so a new task costs
task_embedding_dim parameters. The up generators start at zero: every
generated adapter starts as a no-op, whatever the embeddings.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from components.adapters.base import AdapterLayer, AdapterMethod, output_features
from components.adapters.bottleneck.config import ACTIVATIONS
from components.adapters.hyperformer.config import HyperformerConfig
from components.adapters.registry import register
from components.adapters.tasks import per_task


class TaskEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(dim))


class AdapterGenerator(nn.Module):
    """projected embedding I (p,) -> the weights of one bottleneck adapter of width d, hidden h."""

    def __init__(self, p: int, d: int, h: int) -> None:
        super().__init__()
        self.d, self.h = d, h
        self.down = nn.Linear(p, h * d)
        self.down_bias = nn.Linear(p, h)
        self.up = nn.Linear(p, d * h)
        self.up_bias = nn.Linear(p, d)
        # I is layer-normed (entries ~ unit variance), so std 1/sqrt(p d) gives generated down weights std ~ 1/sqrt(d)
        for linear in (self.down, self.down_bias):
            nn.init.normal_(linear.weight, std=1.0 / math.sqrt(p * d))
            nn.init.zeros_(linear.bias)
        for linear in (self.up, self.up_bias):  # zero-init: generated up weights and bias are exactly 0 at start
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def forward(self, I: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_down (h, d), b_down (h,), W_up (d, h), b_up (d,))."""
        return self.down(I).view(self.h, self.d), self.down_bias(I), self.up(I).view(self.d, self.h), self.up_bias(I)


class HyperformerLayer(AdapterLayer):
    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        self.width = output_features(base)
        self.act = getattr(nn, ACTIVATIONS[self.adapter_config.activation])()

    def new_task(self, task: str) -> nn.Module:
        return nn.Module()  # nothing per layer: the task's embedding lives in the method

    def delta(self, task: str, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.width:
            raise ValueError(f"hyperformer at '{self.path}': output width {x.shape[-1]} != {self.width}")
        W_down, b_down, W_up, b_up = self.method.generate(task, self.depth, self.width)
        return F.linear(self.act(F.linear(x, W_down, b_down)), W_up, b_up)


@register
class HyperformerMethod(AdapterMethod):
    config_cls = HyperformerConfig
    layer_cls = HyperformerLayer

    def prepare(self, targets: list[tuple[str, nn.Module]]) -> None:
        cfg = self.config
        self.shared["layer_embedding"] = nn.Embedding(len(targets), cfg.layer_embedding_dim)
        self.shared["projector"] = nn.Sequential(
            nn.Linear(cfg.task_embedding_dim + cfg.layer_embedding_dim, cfg.projector_hidden),
            nn.ReLU(),
            nn.Linear(cfg.projector_hidden, cfg.projected_dim),
            nn.LayerNorm(cfg.projected_dim),
        )
        widths = sorted({output_features(module) for _, module in targets})
        self.shared["generators"] = nn.ModuleDict(
            {str(d): AdapterGenerator(cfg.projected_dim, d, max(1, d // cfg.reduction_factor)) for d in widths}
        )

    def new_task(self, task: str) -> nn.Module:
        return TaskEmbedding(self.config.task_embedding_dim)

    def generate(self, task: str, depth: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The adapter weights of ``task`` at the target of index ``depth`` (width ``width``)."""
        e = torch.cat([self.tasks[task].embedding, self.shared["layer_embedding"].weight[depth]])
        return self.shared["generators"][str(width)](self.shared["projector"](e))
