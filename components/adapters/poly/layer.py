"""Poly (Polytropon) and Multi-Head Routing on any Linear-like module, and the MHR-z / MHR-mu variants.

Each adapted Linear (in -> out) holds an inventory of n_skills LoRAs shared by
all tasks, cut into n_splits blocks ("heads") along in and out features:

    lora_A (S, K, in/S, r)    lora_B (S, K, r, out/S)       S = n_splits, K = n_skills

and each task only a routing logit vector ``tasks[task].logits`` (S*K). The
task's mixing weights w (S, K) (sigmoid of the logits in eval, a relaxed
Bernoulli sample per batch row in training; normalised over skills) mix the
skills per head: A_mix[s] = sum_k w[s,k] A[s,k], the same for B; the heads
concatenate to a rank-r LoRA A_mix (in, r), B_mix (r, out) and the update is
x A_mix B_mix / r. B starts at zero: the adapter starts as a no-op.

mhr_z trains only the routing; mhr_mu replaces routing by one LoRA per task
that starts from the inventory averaged over skills (``average_inventory``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.distributions.relaxed_bernoulli import RelaxedBernoulli

from components.adapters.base import AdapterLayer, AdapterMethod, module_device
from components.adapters.inject import add_adapter, get_adapter, remove_adapter
from components.adapters.lora.layer import LoraLayer, LoraMethod, linear_targets
from components.adapters.poly.config import MhrConfig, MhrMuConfig, MhrZConfig, PolyConfig
from components.adapters.registry import register

EPS = 1e-12  # keeps the normalisation finite when every skill's weight underflows


def mixing_weights(logits: torch.Tensor, training: bool, temperature: float = 1.0) -> torch.Tensor:
    """Routing logits (G, S, K) -> skill weights (G, S, K), each head's summing to 1 (up to EPS)."""
    if training:  # differentiable sample in (0, 1) per entry: skills are switched on and off at random
        probs = RelaxedBernoulli(temperature=temperature, logits=logits).rsample()
    else:
        probs = torch.sigmoid(logits)
    return probs / (probs.sum(dim=-1, keepdim=True) + EPS)


def init_lora_a(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    """nn.Linear's default init (Kaiming-uniform, a=sqrt(5)) as for a LoRA A: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        return tensor.uniform_(-bound, bound)


class PolyLayer(AdapterLayer):
    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        cfg = self.adapter_config
        S, K, r = cfg.n_splits, cfg.n_skills, cfg.r
        self.in_features, self.out_features = base.in_features, base.out_features
        for what, width in (("in_features", self.in_features), ("out_features", self.out_features)):
            if width % S:
                raise ValueError(f"{cfg.method} at '{path}': {what} {width} is not divisible by n_splits {S}")
        device = module_device(base)
        # the skill inventory, shared by every task: owned by the layer, not under tasks
        self.lora_A = nn.Parameter(init_lora_a(torch.empty(S, K, self.in_features // S, r, device=device), self.in_features // S))
        self.lora_B = nn.Parameter(torch.zeros(S, K, r, self.out_features // S, device=device))

    def new_task(self, task: str) -> nn.Module:
        module = nn.Module()
        # near-uniform routing to start (peft/MTTL: U(-1e-3, 1e-3))
        module.logits = nn.Parameter(torch.empty(self.adapter_config.n_splits * self.adapter_config.n_skills).uniform_(-1e-3, 1e-3))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if not self.method.active:
            return out
        return out + self.update(x).to(out.dtype)

    def routing_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(G, S*K): one row for the whole batch (one task, eval), else one row per batch row."""
        router = self.method.router
        batch = x.size(self.batch_dim) if x.dim() > 1 else 1
        if isinstance(router.current, str):
            logits = self.tasks[router.current].logits.unsqueeze(0)
            # training draws one routing sample per row (as Poly and peft do), so the rows need their own copy
            return logits.expand(batch, -1) if self.training else logits
        ids = router.ids_tensor(batch, x.device)
        table = torch.stack([self.tasks[t].logits for t in router.names])  # (n_tasks, S*K)
        return table[ids.to(table.device)]

    def mixed_lora(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Skill weights (G, S, K) -> A (G, in, r), B (G, r, out): the heads' blocks concatenated."""
        G, r = weights.size(0), self.adapter_config.r
        A = torch.einsum("gsk,skdr->gsdr", weights, self.lora_A).reshape(G, self.in_features, r)  # in = S blocks of in/S
        B = torch.einsum("gsk,skrd->gsrd", weights, self.lora_B)  # (G, S, r, out/S)
        B = B.transpose(1, 2).reshape(G, r, self.out_features)  # out = S blocks of out/S
        return A, B

    def update(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) with its batch along batch_dim -> x A_mix B_mix / r (..., out)."""
        cfg = self.adapter_config
        logits = self.routing_logits(x).view(-1, cfg.n_splits, cfg.n_skills)
        A, B = self.mixed_lora(mixing_weights(logits, self.training, cfg.temperature))
        x = x.to(A.dtype)
        if A.size(0) == 1:
            return x @ A[0] @ B[0] / cfg.r
        rows = x.movedim(self.batch_dim, 0)  # (B, ..., in)
        flat = rows.reshape(rows.size(0), -1, self.in_features)  # (B, N, in)
        y = torch.bmm(torch.bmm(flat, A), B) / cfg.r  # (B, N, out)
        return y.reshape(*rows.shape[:-1], self.out_features).movedim(0, self.batch_dim)

    @torch.no_grad()
    def averaged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The inventory averaged over skills (uniform routing): A (in, r), B (r, out)."""
        K = self.adapter_config.n_skills
        A, B = self.mixed_lora(torch.full((1, self.adapter_config.n_splits, K), 1.0 / K, device=self.lora_A.device, dtype=self.lora_A.dtype))
        return A[0].clone(), B[0].clone()


@register
class PolyMethod(AdapterMethod):
    config_cls = PolyConfig
    layer_cls = PolyLayer
    family = "poly"  # poly, mhr and mhr_z share the inventory layout: load_shared moves one between them

    def select(self, model, path, module):
        return linear_targets(model, path, module, self.config.method)


@register
class MhrMethod(PolyMethod):
    config_cls = MhrConfig


@register
class MhrZMethod(PolyMethod):
    config_cls = MhrZConfig

    def trains(self, name: str) -> bool:
        """Only the per-task routing logits; the inventory (lora_A, lora_B) stays frozen."""
        return ".tasks." in f".{name}."


class MhrMuLayer(LoraLayer):
    """A LoRA per task (alpha / r scaling) whose every task starts from the averaged inventory ``mu_A``, ``mu_B``."""

    def __init__(self, base: nn.Module, method: AdapterMethod, path: str, depth: int, batch_dim: int) -> None:
        super().__init__(base, method, path, depth, batch_dim)
        device, r = module_device(base), self.adapter_config.r
        # shared starting point of every task (buffers: saved by save_shared, never trained); without a source
        # adapter it is a fresh LoRA init (A random, B zero), so mhr_mu alone is a zero-init LoRA
        self.register_buffer("mu_A", init_lora_a(torch.empty(base.in_features, r, device=device), base.in_features))
        self.register_buffer("mu_B", torch.zeros(r, base.out_features, device=device))

    def new_task(self, task: str) -> nn.Module:
        lora = super().new_task(task)
        with torch.no_grad():
            lora["lora_A"].weight.copy_(self.mu_A.T)  # (r, in)
            lora["lora_B"].weight.copy_(self.mu_B.T)  # (out, r)
        return lora

    @torch.no_grad()
    def set_mean(self, A: torch.Tensor, B: torch.Tensor) -> None:
        """New starting point A (in, r), B (r, out); the existing tasks keep their parameters."""
        self.mu_A.copy_(A)
        self.mu_B.copy_(B)


@register
class MhrMuMethod(LoraMethod):
    config_cls = MhrMuConfig
    layer_cls = MhrMuLayer


def average_inventory(model: nn.Module, source: str, name: str = "mhr_mu", tasks: Iterable[str] = ("default",), **overrides) -> MhrMuMethod:
    """Replace the trained poly/mhr adapter ``source`` by an mhr_mu adapter ``name`` on the same modules.

    Every layer's inventory is averaged over skills per head (the update Poly
    gives with uniform routing) and becomes the starting LoRA of each task in
    ``tasks`` (and of any task added later). ``source`` is removed; save it
    first (save_shared) if you still need it. ``overrides``: MhrMuConfig's dropout
    or batch_dim; r and the targets are the source's, alpha is
    1.0 so that the first forward equals the averaged inventory's.
    """
    unknown = set(overrides) - {"dropout", "batch_dim"}
    if unknown:
        raise ValueError(f"average_inventory: {sorted(unknown)} cannot be overridden (targets and r are the source's); only dropout, batch_dim")
    src = get_adapter(model, source)
    if src.family != "poly":
        raise ValueError(f"average_inventory: adapter {source!r} is {src.config.method!r}, not poly, mhr or mhr_z")
    config = MhrMuConfig(**{"target_modules": list(src.config.target_modules), "batch_dim": src.config.batch_dim, **overrides, "r": src.config.r, "alpha": 1.0})
    config.validate()
    means = {path: layer.averaged() for path, layer in src.layers.items()}
    remove_adapter(model, source)
    method = add_adapter(model, config, name=name, tasks=())
    if set(method.layers) != set(means):  # cannot happen unless the model changed under the adapter
        remove_adapter(model, name)
        raise RuntimeError(f"average_inventory: mhr_mu wrapped {sorted(method.layers)}, the source had {sorted(means)}")
    for path, layer in method.layers.items():
        layer.set_mean(*means[path])
    for task in tasks:
        method.add_task(task)
    return method
