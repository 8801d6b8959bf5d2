"""A choice cell: one module of the cascade (or one block of it) chooses frozen, adapter or fine-tune.

    candidate   what runs                                  what trains
    frozen      the module as it is                        nothing (the search gives it a virtual cost)
    adapter     the module with its adapter switched on    the adapter (components.adapters, inside the module)
    finetune    the module with weights W + delta          delta, zero-init: starts equal to frozen

The cell replaces the module in its parent and forwards attribute lookups to
it (``cascade.asr.vocab`` keeps working). How the candidates combine is set by
the search before each forward:

    "hard"   weights (K,) is a one-hot with straight-through gradients (GDAS):
             only the chosen candidate runs; its output is unchanged in value,
             and weights[k] gets the gradient of scaling what the candidate
             changed: <dL/dout, out - x> for an output with the input x's shape
             (a residual block, a transformer layer, the SE), <dL/dout, out>
             for the others. Scaling the whole residual stream instead would
             add <dL/dout, x>, the same for every candidate, as noise.
    "soft"   every candidate runs, outputs mixed by weights (DARTS, K x compute)
    "fixed"  a derived architecture: candidate ``fixed`` alone, unscaled
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.func import functional_call

from components.adapters import AdapterConfig, add_adapter
from components.adapters.base import AdapterLayer
from components.adapters.inject import adapter_named_parameters, find_targets

CANDIDATES = ("frozen", "adapter", "finetune")
SEARCH_SPACES = {"NA": ("frozen", "adapter"), "NFA": ("frozen", "adapter", "finetune")}
ADAPTER_NAME = "nas"


class ChoiceCell(nn.Module):
    """``adapter_root``: for a block cell, the module whose backbone profile resolves the adapter's
    roles (e.g. the ASR for one Conformer layer); the adapter is applied from there, as ``adapter_name``,
    to the targets that lie inside ``base``. Without it the adapter is applied to ``base`` itself."""

    def __init__(
        self,
        base: nn.Module,
        candidates: Sequence[str],
        adapter: AdapterConfig | None = None,
        adapter_root: nn.Module | None = None,
        adapter_name: str = ADAPTER_NAME,
    ) -> None:
        super().__init__()
        unknown = [c for c in candidates if c not in CANDIDATES]
        if unknown or not candidates or len(set(candidates)) != len(candidates):
            raise ValueError(f"candidates must be distinct names from {CANDIDATES}, got {list(candidates)}")
        if ("adapter" in candidates) != (adapter is not None):
            raise ValueError("give an adapter config exactly when 'adapter' is a candidate")
        self.base = base
        self.candidates = tuple(candidates)
        self.label = ""  # the cell's name in the architecture, set by attach_cells
        self.adapter = None
        self._adapter_root = [base if adapter_root is None else adapter_root]  # a list: not a submodule of the cell
        if adapter is not None:
            if adapter_root is not None:
                adapter = _within(adapter_root, base, adapter)
            self.adapter = add_adapter(self._adapter_root[0], adapter, name=adapter_name, tasks=["nas"])
            if adapter_root is not None:  # the block itself was a target (the bridge, a bare Linear): run its wrapper
                self.base = next((m for m in adapter_root.modules() if isinstance(m, AdapterLayer) and m.base is base), base)
        self.delta = nn.ParameterDict()
        adapter_ids = {id(p) for p in self.candidate_parameters()["adapter"]}
        self.weight_names = [n for n, p in self.base.named_parameters() if id(p) not in adapter_ids]  # the backbone's own
        if "finetune" in candidates:
            for n in self.weight_names:
                self.delta[_key(n)] = nn.Parameter(torch.zeros_like(self.base.get_parameter(n)))
        self.mode = "fixed"
        self.fixed = 0
        self.weights: torch.Tensor | None = None  # (K,), set by the search

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base":
                raise
            return getattr(self.base, name)  # the wrapped module's attributes (cfg, vocab, stft, ...)

    def candidate_parameters(self) -> dict[str, list[nn.Parameter]]:
        """The parameters that train when each candidate is chosen."""
        return {
            "frozen": [],
            "adapter": [p for _, p in adapter_named_parameters(self._adapter_root[0], self.adapter)] if self.adapter is not None else [],
            "finetune": list(self.delta.values()),
        }

    def backbone_size(self) -> int:
        """The module's own parameters: what fine-tuning it trains."""
        return sum(self.base.get_parameter(n).numel() for n in self.weight_names)

    def candidate_costs(self) -> dict[str, int]:
        return {c: sum(p.numel() for p in ps) for c, ps in self.candidate_parameters().items() if c in self.candidates}

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.mode == "fixed":
            return self._run(self.fixed, args, kwargs)
        if self.weights is None or self.weights.shape != (len(self.candidates),):
            raise RuntimeError(f"choice cell in mode {self.mode!r} needs weights of shape ({len(self.candidates)},) from the search")
        if self.mode == "hard":
            k = int(self.weights.argmax())
            return _straight_through(self._run(k, args, kwargs), self.weights[k], _first_input(args, kwargs))
        outs = [self._run(k, args, kwargs) for k in range(len(self.candidates))]
        return _mix(outs, self.weights)

    def _run(self, k: int, args: tuple, kwargs: dict) -> Any:
        choice = self.candidates[k]
        if self.adapter is not None:
            self.adapter.active = choice == "adapter"
        if choice != "finetune":
            return self.base(*args, **kwargs)
        weights = {n: self.base.get_parameter(n) + self.delta[_key(n)] for n in self.weight_names}
        return functional_call(self.base, weights, args, kwargs, strict=False)

    def extra_repr(self) -> str:
        return f"candidates={self.candidates}, mode={self.mode!r}" + (f", fixed={self.candidates[self.fixed]!r}" if self.mode == "fixed" else "")


def _within(root: nn.Module, block: nn.Module, config: AdapterConfig) -> AdapterConfig:
    """``config`` with its targets narrowed to the modules of ``root`` that lie inside ``block`` (exact paths)."""
    inside = {id(m) for m in block.modules()}
    paths = [path for path, module in find_targets(root, config.target_modules) if id(module) in inside]
    if not paths:
        raise ValueError(f"adapter targets {list(config.target_modules)} match nothing inside the {type(block).__name__} block")
    return dataclasses.replace(config, target_modules=paths)


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold "."


def _is_float(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor | None:
    """The block's input: its first floating tensor argument (hidden states, audio), positional or ``hidden_states``."""
    return next((a for a in args if _is_float(a)), kwargs.get("hidden_states"))


def _straight_through(out: Any, w: torch.Tensor, x: torch.Tensor | None) -> Any:
    """``out`` in value; the gradient to ``w`` of scaling each floating output's change from ``x`` (where
    the shapes match) or the output itself. In a weight step ``w`` has no gradient: ``out`` as it is."""
    if not w.requires_grad:
        return out
    zero = w - w.detach()  # 0 in value (so out + zero * d == out exactly), d(zero)/dw = 1

    def probe(t: Any) -> Any:
        if not _is_float(t):
            return t
        change = t - x if x is not None and t.shape == x.shape else t
        return t + zero.to(t.dtype) * change

    return pytree.tree_map(probe, out)


def _opaque(x: Any) -> bool:
    """A list holding no tensor (an ASR's 1-best words, texts, tokens) is one leaf: candidates may differ in it."""
    return isinstance(x, list) and not any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(x))


def _mix(outs: list[Any], weights: torch.Tensor) -> Any:
    """sum_k weights[k] * outs[k] over the floating tensors; everything else from the first candidate."""
    flat = [pytree.tree_flatten(o, is_leaf=_opaque) for o in outs]
    spec = flat[0][1]
    if any(s != spec for _, s in flat):
        raise ValueError("candidates returned outputs of different structure")
    mixed = []
    for leaves in zip(*(f for f, _ in flat)):
        if _is_float(leaves[0]):
            if any(t.shape != leaves[0].shape for t in leaves):
                raise ValueError(f"candidates returned tensors of shapes {[tuple(t.shape) for t in leaves]}: a soft mixture needs one shape; search this cell with hard=True")
            mixed.append(sum(w.to(t.dtype) * t for w, t in zip(weights, leaves)))
        else:
            mixed.append(leaves[0])
    return pytree.tree_unflatten(mixed, spec)
