"""The architecture search's two stages on the cascade, on the shared training loop and cascade_loss."""

from __future__ import annotations

import functools
from typing import Sequence

from components.data.dataset import SpeechDataset, collate
from components.models.cascade import MODES, Cascade, cascade_loss
from components.nas.architecture import Architecture
from components.nas.cascade import SEARCHED_MODULES, attach_cells, find_cells, glue_parameters
from components.nas.search import search, train_derived
from components.training.loop import TrainConfig, TrainResult
from components.training.recipes import MetricsFn, validation_fn


def search_cascade(
    cascade: Cascade, train_ds: SpeechDataset, val_ds: SpeechDataset, search_cfg, space: str = "NFA", adapters: dict | None = None,
    frozen_cost: float = 0.0, blocks: Sequence[str] = (), on_record=None, modules: Sequence[str] = SEARCHED_MODULES, serve_mode: str = "e2e",
):
    """Stage 1 of the architecture search on the cascade's ``modules`` (per block for those in ``blocks``;
    loss: cascade_loss; the bridge always trains unless it is searched). The architecture steps score the
    NLU in ``serve_mode``, the mode the system will serve in ("e2e" through the bridge, or "text"); the weight
    steps always train e2e, so the bridge learns. Returns (architecture, search result) with the derived
    choices fixed."""
    if serve_mode not in MODES:
        raise ValueError(f"serve_mode must be one of {MODES}, got {serve_mode!r}")
    arch = Architecture(attach_cells(cascade, space, adapters, modules, blocks), frozen_cost=frozen_cost)
    result = search(cascade, arch, cascade_loss, train_ds, val_ds, search_cfg, collate_fn=collate, extra=glue_parameters(cascade), on_record=on_record,
                    val_loss_fn=functools.partial(cascade_loss, mode=serve_mode))
    arch.fix(result.architecture)
    return arch, result


def train_cascade_architecture(cascade: Cascade, choices: dict[str, str], train_ds: SpeechDataset, val_ds: SpeechDataset | None, cfg: TrainConfig, on_metrics: MetricsFn = None) -> TrainResult:
    """Stage 2 of the architecture search: the cascade's cells fixed to ``choices``; only the chosen
    candidates and the bridge train, on the same loss as full fine-tuning (no validation without val_ds)."""
    arch = Architecture(find_cells(cascade))

    def val(model, b):
        total, parts = cascade_loss(model, b)
        return {"val_loss": total, **{f"val_{k}": v for k, v in parts.items()}}

    val_fn = validation_fn(val_ds, val, cfg) if val_ds is not None else None
    return train_derived(cascade, arch, choices, cascade_loss, train_ds, cfg, collate_fn=collate, val_fn=val_fn, extra=glue_parameters(cascade), on_metrics=on_metrics)
