"""Training for multi-task adaptation of the cascade's ASR: every task's adapter in one run on mixed
batches (each row through its own task's parameters), a new task added to a trained adapter, and full
fine-tuning per task. The loss is the ASR's CTC on SE-enhanced noisy audio; SE, NLU and bridge stay frozen.

Per-task parameters never see another task's rows, so one joint run of a per-task method (LoRA,
residual adapters, BitFit) trains the same adapters as one run a task; AdamW skips parameters whose task
is absent from a batch.
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from pathlib import Path

from components.adapters import AdapterConfig, MhrZConfig, add_adapter, average_inventory, freeze_backbone, frozen_norm_statistics, get_adapter, load_shared
from components.data.dataset import SpeechDataset, collate
from components.models.cascade import Cascade
from components.multitask.bundle import ADAPTER, TaskAdapters
from components.multitask.tasks import TASK
from components.training.front_cache import FrontCache
from components.training.loop import TrainConfig, TrainResult, train
from components.training.recipes import MetricsFn, enhanced_asr_loss, validation_fn

NEW_TASK_VARIANTS = ("head", "mhr_z", "mhr_mu")  # how a new task joins: HRA's new head; MHR's routing only; MHR's averaged inventory as its LoRA


def routed_asr_loss(cascade: Cascade, b: dict, cache: FrontCache | None = None):
    """enhanced_asr_loss with each row routed to its task's parameters."""
    get_adapter(cascade, ADAPTER).set_task([m[TASK] for m in b["meta"]])
    return enhanced_asr_loss(cascade, b, cache)


def _fit(cascade: Cascade, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn, loss=routed_asr_loss) -> TrainResult:
    cache = FrontCache(cfg.front_cache_mb) if cfg.front_cache_mb > 0 else None
    cached_loss = lambda m, b: loss(m, b, cache)  # noqa: E731
    with frozen_norm_statistics(cascade):  # the backbone's batch-norm statistics are part of what every task shares
        return train(cascade, cached_loss, train_ds, cfg, collate_fn=collate, val_fn=validation_fn(val_ds, lambda m, b: {"val_loss": cached_loss(m, b)}, cfg), on_metrics=on_metrics)


def train_task_adapters(
    cascade: Cascade, config: AdapterConfig, tasks: list[str], train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn = None,
    asr_options: dict | None = None,
) -> TrainResult:
    """Apply ``config`` (its targets name cascade modules, e.g. 'asr:@layer') with ``tasks`` and train every
    task's parameters (and the shared ones) jointly on those tasks' rows; only adapter parameters train.
    ``asr_options``: the ASR's run-time options while it trains (Whisper: {pad_to: longest, margin_seconds: 1})."""
    cascade.asr.configure(**(asr_options or {}))
    add_adapter(cascade, config, name=ADAPTER, tasks=tasks)
    freeze_backbone(cascade)
    return _fit(cascade, train_ds.where(TASK, *tasks), _validation_rows(val_ds, train_ds, *tasks), cfg, on_metrics)


def _validation_rows(val_ds: SpeechDataset, train_ds: SpeechDataset, *tasks: str) -> SpeechDataset:
    """The tasks' validation rows; the tasks' train rows when the validation split has none of them."""
    rows = val_ds.where(TASK, *tasks)
    return rows if len(rows) else train_ds.where(TASK, *tasks)


def add_task(
    cascade: Cascade, trained: TaskAdapters, variant: str, task: str, train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, on_metrics: MetricsFn = None,
) -> TrainResult:
    """Add ``task`` to a trained adapter bundle and train only what the task adds, with the ASR's run-time
    options the bundle trained with.

    head: the bundle's adapter with every task, plus the new task's parameters (HRA: its head; the
    controller and the other heads frozen). mhr_z: the trained MHR inventory frozen, only the new task's
    routing trains. mhr_mu: the inventory averaged over skills becomes the new task's LoRA, which trains.
    """
    if variant not in NEW_TASK_VARIANTS:
        raise ValueError(f"new-task variant {variant!r}: use one of {NEW_TASK_VARIANTS}")
    if trained.kind != "adapter":
        raise ValueError(f"bundle {trained.system!r} is kind {trained.kind!r}: only adapter bundles take a new task")
    cascade.asr.configure(**trained.asr_options)
    if variant == "head":
        trained.attach(cascade)
        method = get_adapter(cascade, ADAPTER)
        method.add_task(task)
        prefix = f".tasks.{task}."
        for name, p in cascade.named_parameters():
            p.requires_grad_(prefix in f".{name}.")
    else:
        source = trained.config
        if source.method not in ("poly", "mhr"):
            raise ValueError(f"variant {variant!r} needs a poly/mhr bundle; {trained.system!r} is {source.method!r}")
        if variant == "mhr_z":
            add_adapter(cascade, MhrZConfig(**{k: v for k, v in source.to_dict().items() if k != "method"}), name=ADAPTER, tasks=[task])
            load_shared(cascade, trained.shared_file, name=ADAPTER)
        else:
            add_adapter(cascade, source, name=ADAPTER, tasks=())
            load_shared(cascade, trained.shared_file, name=ADAPTER)
            average_inventory(cascade, ADAPTER, name=ADAPTER, tasks=[task])
        freeze_backbone(cascade)
    return _fit(cascade, train_ds.where(TASK, task), _validation_rows(val_ds, train_ds, task), cfg, on_metrics)


def finetune_per_task(
    cascade: Cascade, tasks: list[str], train_ds: SpeechDataset, val_ds: SpeechDataset, cfg: TrainConfig, root: str | Path,
    system: str = "full_finetuning", backbone: str = "", on_metrics: MetricsFn = None, asr_options: dict | None = None,
) -> tuple[TaskAdapters, dict[str, TrainResult]]:
    """Full fine-tuning of the ASR, one copy a task on that task's rows, each saved into the bundle folder
    ``root`` as it finishes. ``cfg.checkpoint_dir`` (if set) gets a sub-folder a task while it trains, removed
    once the task is in the bundle (a whole ASR and its AdamW state a task would fill a disk at 24 tasks; a
    run killed and started again retrains the finished tasks). ``asr_options``: the ASR's run-time options
    while it trains, recorded in the bundle."""
    cascade.asr.configure(**(asr_options or {}))
    results = {}
    for task in tasks:
        model = copy.deepcopy(cascade)
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("asr."))
        task_cfg = replace(cfg, checkpoint_dir=str(Path(cfg.checkpoint_dir) / task) if cfg.checkpoint_dir else None)
        results[task] = _fit(model, train_ds.where(TASK, task), _validation_rows(val_ds, train_ds, task), task_cfg, on_metrics, loss=enhanced_asr_loss)
        TaskAdapters.save_full_task(model.asr, root, task)
        if task_cfg.checkpoint_dir:
            shutil.rmtree(task_cfg.checkpoint_dir, ignore_errors=True)
    asr_parameters = sum(p.numel() for p in cascade.asr.parameters())
    return TaskAdapters.create(Path(root), system, "full", list(tasks), backbone, task_parameters=asr_parameters, asr_options=cascade.asr.runtime_settings()), results
