"""LoRA on any Linear-like module (nn.Linear, the q/k/v slices of an explicit Attention)."""

from __future__ import annotations

import math

import torch
from torch import nn

from components.adapters.attention import ProjectionSlice, explicit_attention
from components.adapters.base import AdapterLayer, AdapterMethod
from components.adapters.inject import get_adapter, remove_adapter
from components.adapters.lora.config import LoraConfig
from components.adapters.registry import register

LINEAR_LIKE = (nn.Linear, ProjectionSlice)


def linear_targets(model: nn.Module, path: str, module: nn.Module, method: str) -> list[tuple[str, nn.Module]]:
    """A Linear-like target itself; inside a container, every Linear-like (MultiheadAttention made explicit first)."""
    if isinstance(module, LINEAR_LIKE):
        return [(path, module)]
    join = lambda sub: f"{path}.{sub}" if sub else path  # noqa: E731
    for sub, m in list(module.named_modules()):
        if isinstance(m, nn.MultiheadAttention):
            explicit_attention(model, join(sub))
    module = model.get_submodule(path)
    found = [(join(sub), m) for sub, m in module.named_modules() if isinstance(m, LINEAR_LIKE) and not isinstance(m, AdapterLayer)]
    if not found:
        raise TypeError(f"{method} adapts Linear layers; target '{path}' ({type(module).__name__}) holds none")
    return found


class LoraLayer(AdapterLayer):
    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        cfg = self.adapter_config
        self.scaling = cfg.alpha / cfg.r
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.merged: str | None = None  # the task whose update is folded into base.weight
        self._row_cache: tuple | None = None  # a mixed batch's per-row weights (_row_weights)

    def new_task(self, task: str) -> nn.Module:
        A = nn.Linear(self.base.in_features, self.adapter_config.r, bias=False)
        B = nn.Linear(self.adapter_config.r, self.base.out_features, bias=False)
        nn.init.kaiming_uniform_(A.weight, a=math.sqrt(5))
        nn.init.zeros_(B.weight)
        return nn.ModuleDict({"lora_A": A, "lora_B": B})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.method.active:
            return out - self._update(self.merged, x) if self.merged else out
        if self.merged is not None:
            groups = self.method.router.groups()
            if len(groups) != 1 or groups[0][0] != self.merged:
                raise RuntimeError(f"LoRA at '{self.path}' is merged for task {self.merged!r}; unmerge() before running {[g[0] for g in groups]}")
            return out
        groups = self.method.router.groups()
        if len(groups) == 1:
            return out + self._update(groups[0][0], x)
        return out + self._row_updates(x)

    def _update(self, task: str, x: torch.Tensor) -> torch.Tensor:
        lora = self.tasks[task]
        return lora["lora_B"](lora["lora_A"](self.dropout(x))) * self.scaling

    def _row_updates(self, x: torch.Tensor) -> torch.Tensor:
        """A mixed batch: every row through its own task's A and B as two batched matmuls over the rows,
        not a pair of small matmuls (and a gather and a scatter) for each task of the batch."""
        rows = x.size(self.batch_dim)
        A, B = self._row_weights(x.device)  # (B, in, r), (B, r, out)
        if A.shape[0] != rows:
            raise ValueError(f"task ids for {A.shape[0]} rows, but dim {self.batch_dim} of the input has {rows}")
        h = self.dropout(x).movedim(self.batch_dim, 0)  # (B, ..., in)
        shape = h.shape
        h = torch.bmm(torch.bmm(h.reshape(rows, -1, shape[-1]), A), B)  # (B, N, out)
        return (h * self.scaling).reshape(*shape[:-1], -1).movedim(0, self.batch_dim)

    def _row_weights(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's task's A^T (B, in, r) and B^T (B, r, out), contiguous for bmm. Without gradients
        (serving) they are kept for the batch: a decoder step reuses its batch's until the batch narrows
        (a new ids tensor) or a weight changes (its version). Stacked from a list of rows, not gathered
        with index_select, which takes milliseconds on a (T, r, in) stack of 2 threads."""
        tasks, which = self.method.router.row_tasks()  # which: (B,) the row's task among tasks, one tensor a batch
        weights = [(self.tasks[task]["lora_A"].weight, self.tasks[task]["lora_B"].weight) for task in tasks]
        versions = tuple(w._version for pair in weights for w in pair)
        cached = self._row_cache
        if cached is not None and cached[0] is which and cached[1] == versions and not torch.is_grad_enabled():
            return cached[2], cached[3]
        rows = which.tolist()
        A = torch.stack([weights[k][0] for k in rows]).transpose(1, 2).contiguous().to(device)
        B = torch.stack([weights[k][1] for k in rows]).transpose(1, 2).contiguous().to(device)
        self._row_cache = None if torch.is_grad_enabled() else (which, versions, A, B)
        return A, B

    def delta_weight(self, task: str) -> torch.Tensor:
        lora = self.tasks[task]
        return lora["lora_B"].weight @ lora["lora_A"].weight * self.scaling  # (out, in)

    @torch.no_grad()
    def merge(self, task: str) -> None:
        if self.merged is not None:
            raise RuntimeError(f"LoRA at '{self.path}' is already merged for task {self.merged!r}")
        self.base.weight.data += self.delta_weight(task).to(self.base.weight.dtype)
        self.merged = task

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged is not None:
            self.base.weight.data -= self.delta_weight(self.merged).to(self.base.weight.dtype)
            self.merged = None


@register
class LoraMethod(AdapterMethod):
    config_cls = LoraConfig
    layer_cls = LoraLayer

    def select(self, model, path, module):
        return linear_targets(model, path, module, self.config.method)

    def merge(self, task: str | None = None) -> None:
        """Fold ``task``'s update (default: the current task) into the base weights: inference costs nothing extra."""
        task = task or self.router.current
        if not isinstance(task, str):
            raise RuntimeError("merge needs one task; the current batch mixes tasks")
        self.router.set(task)
        for layer in self.layers.values():
            layer.merge(task)

    def unmerge(self) -> None:
        for layer in self.layers.values():
            layer.unmerge()


@torch.no_grad()
def merge_and_unload(model: nn.Module, name: str = "default", task: str | None = None) -> nn.Module:
    """Fold one task's LoRA into the base weights for good and take the adapter off.

    The model is the original module tree again (MultiheadAttention included),
    so inference costs exactly what the backbone costs; the other tasks of the
    adapter go with it (save them first).
    """
    method = get_adapter(model, name)
    if not isinstance(method, LoraMethod):
        raise TypeError(f"merge_and_unload: adapter {name!r} is {method.config.method!r}, not a LoRA")
    method.unmerge()
    task = task or method.router.current
    if not isinstance(task, str):
        raise RuntimeError("merge_and_unload needs one task; the current batch mixes tasks")
    method.router.id(task)
    deltas = [(layer.base, layer.delta_weight(task)) for layer in method.layers.values()]
    remove_adapter(model, name)
    for base, delta in deltas:
        base.weight.data += delta.to(base.weight.dtype)
    return model
