"""The training loop shared by every module (SE, ASR, NLU, adapters, search).

Plain torch; metrics leave through the ``on_metrics`` callback (the ZenML step
passes one that calls ``log_metadata``), so this file never imports zenml.

What it guarantees:

- Deterministic data order: epoch ``e`` visits ``train_set`` in the
  permutation drawn from a ``torch.Generator`` seeded with ``(seed, e)``,
  whatever happened before (no dependence on the global RNG).
- Exact resume: with ``checkpoint_dir`` set, a checkpoint is written every
  ``checkpoint_every`` optimizer steps and at each epoch end; ``train`` called
  again on the same folder continues from the newest one, skipping the batches
  of the current epoch already done, so weights and history come out
  bit-identical to an uninterrupted run (RNG states of torch, numpy and
  ``random`` are restored too, so dropout and random augmentation in
  ``loss_fn`` replay exactly).
- Validation (``val_fn``) at each epoch end under ``model.eval()`` and
  ``torch.no_grad()``; lower ``monitor`` is better; the best weights are loaded
  into the model at the end; early stopping after ``patience`` epochs without
  improvement.
- AMP (autocast, plus a GradScaler for fp16) only on CUDA: bf16 where the GPU
  supports it, else fp16. On CPU the loop runs in fp32.

A run that stops at ``max_steps`` in the middle of an epoch closes that partial
epoch (validation, a history record with ``"partial": True``) after writing its
checkpoint, so the checkpoint still describes the state mid-epoch and a later
run with a larger ``max_steps`` continues exactly.

Data-parallel under torchrun (components/training/distributed.py), when a
process group of world size W > 1 is initialised before ``train`` is called:

- Every rank walks the same global batches (``cfg.batch_size`` is the global
  batch) and trains on its contiguous shard of each; DistributedDataParallel
  all-reduces the gradients. Each rank's loss is scaled by
  ``n_local * W / n_global`` first, so the averaged gradient is that of the
  mean loss over the global batch, also with unequal shards. For a loss that
  is a mean over items and draws no random numbers, the weights match a
  single-process run up to float rounding (the sums are grouped differently).
  Dropout and augmentation draw from per-rank RNG streams (seed + rank).
  BatchNorm normalises over each rank's shard; rank 0's running statistics
  are kept.
- Reported loss and extras are the global batch's means (all-reduced,
  weighted by shard size); every rank must report the same extra keys.
- Rank 0 alone writes checkpoints (with every rank's RNG states), emits
  ``on_metrics``, shows progress and runs ``val_fn``; it sends the
  checkpoint it resumes from and the validation numbers to the other ranks,
  so all ranks take the same decisions and return the same weights.
"""

from __future__ import annotations

import fnmatch
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from components.training import distributed
from components.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from components.training.distributed import DistInfo

LossOutput = torch.Tensor | tuple[torch.Tensor, Mapping[str, float]]
LossFn = Callable[[nn.Module, Any], LossOutput]
ValFn = Callable[[nn.Module], Mapping[str, float]]
MetricsFn = Callable[[dict[str, Any]], None]
OptimizerArg = torch.optim.Optimizer | Callable[[nn.Module], torch.optim.Optimizer] | None


@dataclass
class TrainConfig:
    max_epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps in total
    batch_size: int = 8
    lr: float = 1e-3  # default AdamW only
    lr_scale: dict[str, float] = field(default_factory=dict)  # default AdamW only: name prefix or glob ('*.delta.*') -> lr multiplier (longest key wins)
    weight_decay: float = 0.0  # default AdamW only
    grad_clip: float | None = 5.0  # max global grad norm; None = no clipping
    seed: int = 0  # data order, and the global RNGs of a fresh (not resumed) run
    device: str = "auto"  # "auto" -> cuda when available, else cpu
    amp: bool = True  # autocast (+ GradScaler for fp16), only on cuda
    monitor: str = "val_loss"  # key of val_fn's dict; lower is better
    patience: int | None = 3  # epochs without improvement before stopping; None = never
    checkpoint_dir: str | None = None  # resume from / write checkpoints here
    checkpoint_every: int = 50  # optimizer steps between checkpoints (plus one at each epoch end)
    keep_checkpoints: int = 2
    log_every: int = 10  # optimizer steps between step records sent to on_metrics
    warmup_steps: int = 0  # linear lr warm-up from 0 over this many optimizer steps
    schedule: str = "constant"  # after warm-up: "constant", or "cosine" decay to 0 at step max_epochs * batches
    bucket_by_length: bool = False  # batches of similar length (needs train_set.lengths): less padding
    num_workers: int = 0  # DataLoader workers
    threads: int | None = None  # torch.set_num_threads
    progress: bool = True  # tqdm bars
    front_cache_mb: float = 0.0  # losses that read a frozen front (enhanced ASR): cache it per clip up to this many MiB (0: off)


@dataclass
class TrainResult:
    history: list[dict[str, Any]]  # one record per epoch (see train)
    best_epoch: int | None  # 1-based; None without val_fn
    best_metric: float | None
    steps: int  # optimizer steps done in total (across resumes)
    stopped_early: bool
    resumed_from: int | None = None  # global step of the checkpoint this run started from
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # on cpu: the best epoch's trainable parameters and buffers


@dataclass
class _Progress:
    """Everything besides weights, optimizer and RNGs that a resume needs."""

    epoch: int = 0  # 0-based epoch in progress
    batch_in_epoch: int = 0  # batches of that epoch already trained on
    global_step: int = 0
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the last improvement
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)  # this epoch's running sums of step metrics
    seconds: float = 0.0  # this epoch's training time so far


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(obj: Any, device: torch.device) -> Any:
    """Move tensors nested in dicts, lists and tuples to ``device``; other leaves unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        moved = {k: to_device(v, device) for k, v in obj.items()}
        try:
            return type(obj)(moved)  # dict subclasses such as transformers' BatchEncoding
        except TypeError:  # e.g. defaultdict
            return moved
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return type(obj)(*(to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` visited in ``epoch``: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(_mix(seed, epoch))
    return torch.randperm(n, generator=g)


BUCKET_WINDOW = 50  # batches whose items are sorted by length together


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, lengths: Sequence[float] | None = None) -> list[list[int]]:
    """The batches of ``epoch``, in order: a function of (seed, epoch, lengths) only.

    Without ``lengths``: consecutive slices of ``epoch_order``. With them: the
    permutation is cut into windows of BUCKET_WINDOW batches, each window is
    sorted by length and sliced into batches, and the batches are shuffled, so
    a batch pads to a similar length while the epoch stays random."""
    order = epoch_order(n, seed, epoch).tolist()
    if lengths is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    batches = []
    for start in range(0, n, batch_size * BUCKET_WINDOW):
        window = sorted(order[start : start + batch_size * BUCKET_WINDOW], key=lambda i: lengths[i])
        batches += [window[i : i + batch_size] for i in range(0, len(window), batch_size)]
    g = torch.Generator().manual_seed(_mix(seed, epoch) + 1)
    return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]


def lr_factor(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Multiplier of every group's base lr at optimizer step ``step`` (0-based): a pure
    function of the step, so a resumed run follows the same schedule."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(total_steps - cfg.warmup_steps, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    raise ValueError(f"TrainConfig.schedule: unknown schedule {cfg.schedule!r} (use 'constant' or 'cosine')")


def _mix(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**63)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def lr_groups(named: list[tuple[str, nn.Parameter]], lr: float, lr_scale: dict[str, float], known: list[str] | None = None) -> list[dict]:
    """Optimizer groups {"params", "lr"} over ``named``: each parameter at lr x the scale of the most
    specific (longest) ``lr_scale`` key it matches, 1 when none. A key with '*' is a glob over the whole
    name ('*.delta.*'); any other key is a name prefix ('nlu.encoder.'). A prefix that matches none of
    ``known`` (default: the names in ``named``) is a ValueError (a typo); a glob may match nothing (one
    config serves models with and without, e.g., fine-tune deltas)."""

    def matches(key: str, name: str) -> bool:
        return fnmatch.fnmatchcase(name, key) if "*" in key else name.startswith(key)

    known = [n for n, _ in named] if known is None else known
    unused = [k for k in lr_scale if "*" not in k and not any(matches(k, n) for n in known)]
    if unused:
        raise ValueError(f"lr_scale prefixes match no parameter name: {unused}")
    groups: dict[float, list[nn.Parameter]] = {}
    for name, p in named:
        key = max((k for k in lr_scale if matches(k, name)), key=len, default=None)
        groups.setdefault(lr_scale[key] if key is not None else 1.0, []).append(p)
    return [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]


def _make_optimizer(model: nn.Module, cfg: TrainConfig, optimizer: OptimizerArg) -> torch.optim.Optimizer:
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if optimizer is not None:
        return optimizer(model)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("the model has no parameter with requires_grad=True")
    groups = lr_groups(trainable, cfg.lr, cfg.lr_scale, known=[n for n, _ in model.named_parameters()])
    # fused: one kernel for every parameter's update (CPU and CUDA), not a Python loop over them
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for _, p in trainable)
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def _validate(model: nn.Module, val_fn: ValFn) -> dict[str, float]:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = val_fn(model)
    model.train(was_training)
    return {k: float(v) for k, v in out.items()}


def _trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What training can change: the trainable parameters and every buffer (BatchNorm statistics). A
    checkpoint holds only these; the frozen rest comes from the model the run starts from (an adapter
    run's checkpoint is then its adapter, not a copy of the whole cascade)."""
    return {k: v.detach() for k, v in model.state_dict(keep_vars=True).items() if not isinstance(v, nn.Parameter) or v.requires_grad}


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.to("cpu", copy=True) for k, v in _trained_state(model).items()}


def _load_trained(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a ``_trained_state`` (or a whole state dict) back; it must cover every trainable parameter."""
    missing = sorted(set(_trained_state(model)) - set(state))
    unexpected = sorted(set(state) - set(model.state_dict()))
    if missing or unexpected:
        raise RuntimeError(f"trainable tensors missing: {missing[:5]}; unknown tensors: {unexpected[:5]}")
    model.load_state_dict(state, strict=False)


class _LossModule(nn.Module):
    """``forward(batch) = loss_fn(model, batch)``: one module call per step, so that DDP's forward
    hooks run although loss_fns call sub-modules (``model.asr(...)``) rather than ``model(...)``."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> LossOutput:
        return self.loss_fn(self.model, batch)


def _restore_rng(state: dict[str, Any], ranks: DistInfo, seed: int, step: int) -> None:
    """This rank's RNG states from a checkpoint; a rank the checkpoint has none for (it was written
    by another world size) starts a fresh stream."""
    per_rank = state.get("rng_ranks")  # written by multi-process runs: [rank 0's, rank 1's, ...]
    if per_rank is not None and len(per_rank) == ranks.world_size:
        set_rng_state(per_rank[ranks.rank])
    elif ranks.is_main:
        set_rng_state(state["rng"])
    else:
        _seed_everything(_mix(seed + ranks.rank, step))


def train(
    model: nn.Module,
    loss_fn: LossFn,
    train_set: Dataset | Sequence,
    cfg: TrainConfig | None = None,
    *,
    collate_fn: Callable | None = None,
    val_fn: ValFn | None = None,
    on_metrics: MetricsFn | None = None,
    optimizer: OptimizerArg = None,
) -> TrainResult:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``train_set``.

    ``loss_fn`` returns the loss, or ``(loss, {name: float})`` whose extra
    metrics are averaged per epoch as ``train_<name>``. Batches reach it on the
    training device. Without ``optimizer``, AdamW over the parameters with
    ``requires_grad`` (frozen parts stay untouched); else an optimizer, or a
    function of the model returning one (e.g. param groups with their own lrs).

    ``on_metrics`` receives step records every ``log_every`` steps
    (step, epoch, loss, extras, lr, grad_norm) and epoch records (epoch,
    step, train_loss, train_<extra>, the val metrics, lr, seconds); epoch
    records are also ``TrainResult.history``. Epochs are 1-based in records.
    """
    cfg = cfg or TrainConfig()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ranks = distributed.current()  # SINGLE unless torchrun's process group is initialised
    device = resolve_device(cfg.device)
    model.to(device)
    opt = _make_optimizer(model, cfg, optimizer)
    params = [p for group in opt.param_groups for p in group["params"]]
    amp_dtype = _amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    n_batches = math.ceil(len(train_set) / cfg.batch_size)
    lengths = getattr(train_set, "lengths", None) if cfg.bucket_by_length else None
    if cfg.bucket_by_length and lengths is None:
        raise ValueError(f"bucket_by_length needs a train_set with a `lengths` attribute; {type(train_set).__name__} has none")
    total_steps = cfg.max_epochs * n_batches  # the schedule's plan; max_steps only cuts it short (a later run continues it)
    data_key = {"n": len(train_set), "batch_size": cfg.batch_size, "seed": cfg.seed, "bucket_by_length": cfg.bucket_by_length}
    # what the optimizer's trajectory depends on: a resume under other values would silently mix two runs
    plan_key = {k: getattr(cfg, k) for k in ("lr", "lr_scale", "weight_decay", "grad_clip", "warmup_steps", "schedule")}
    emit = on_metrics if on_metrics is not None and ranks.is_main else (lambda record: None)

    p, best_state, resumed_from = _Progress(), None, None
    # Rank 0 reads the folder and sends the checkpoint to the others: every rank resumes from the
    # very same one, and only rank 0 needs to see the folder.
    ckpt = distributed.broadcast_object(load_checkpoint(cfg.checkpoint_dir) if cfg.checkpoint_dir and ranks.is_main else None)
    if ckpt is not None:
        if ckpt.state["data"] != data_key:
            raise ValueError(f"checkpoint in {cfg.checkpoint_dir} was made with {ckpt.state['data']}, not {data_key}")
        saved_plan = ckpt.state.get("plan", plan_key)  # checkpoints written before the plan was recorded
        if saved_plan != plan_key:
            changed = {k: f"{saved_plan.get(k)!r} -> {v!r}" for k, v in plan_key.items() if saved_plan.get(k) != v}
            raise ValueError(f"checkpoint in {cfg.checkpoint_dir} (step {ckpt.step}) was trained with other settings ({changed}); "
                             "move it away to train afresh, or restore the settings to resume")
        try:
            _load_trained(model, ckpt.model_state)
            opt.load_state_dict(ckpt.state["optimizer"])
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"checkpoint in {cfg.checkpoint_dir} (step {ckpt.step}) does not fit this model's parameters "
                             f"(made by another version of the code?); move it away to train afresh: {err}") from err
        scaler.load_state_dict(ckpt.state["scaler"])
        p = _Progress(**ckpt.state["progress"])
        best_state, resumed_from = ckpt.best_state, ckpt.step
        _restore_rng(ckpt.state, ranks, cfg.seed, ckpt.step)
    else:
        _seed_everything(cfg.seed + ranks.rank)  # one seed for all ranks would give them the same dropout masks
    step_fn: nn.Module = _LossModule(model, loss_fn)
    if ranks.distributed:
        # Built after the checkpoint is loaded; DDP broadcasts rank 0's weights and buffers anyway.
        # find_unused_parameters: a step may leave trainable parameters out of the graph (another
        # task's adapter); frozen ones (requires_grad=False) DDP ignores. device_ids=None: the batch is
        # already on the device, and DDP would otherwise rebuild its containers while moving it.
        step_fn = DistributedDataParallel(step_fn, device_ids=None, find_unused_parameters=True)
    for group in opt.param_groups:  # the schedule scales each group's own lr (kept across resumes)
        group.setdefault("initial_lr", group["lr"])
    saved_step = resumed_from
    mark = time.perf_counter()

    def tick() -> None:  # add the time since the last tick to this epoch's seconds
        nonlocal mark
        now = time.perf_counter()
        p.seconds, mark = p.seconds + now - mark, now

    def lr() -> float:
        return float(opt.param_groups[0]["lr"])

    def save() -> None:
        nonlocal saved_step
        if not cfg.checkpoint_dir or saved_step == p.global_step:
            return
        tick()
        rngs = distributed.gather_objects(rng_state())  # a collective: all ranks save at the same steps
        saved_step = p.global_step
        if not ranks.is_main:
            return
        state = {
            "format": 1,
            "data": data_key,
            "plan": plan_key,
            "progress": asdict(p),
            "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict(),
            "rng": rngs[0],
        }
        if ranks.distributed:
            state["rng_ranks"] = rngs
        save_checkpoint(cfg.checkpoint_dir, p.global_step, _trained_state(model), state, best_state, cfg.keep_checkpoints)

    def close_epoch(partial: bool) -> None:
        nonlocal best_state
        tick()
        distributed.broadcast_buffers(model)  # rank 0's BatchNorm statistics on every rank
        n = max(p.batch_in_epoch, 1)
        record: dict[str, Any] = {"epoch": p.epoch + 1, "step": p.global_step}
        record.update({f"train_{k}": v / n for k, v in p.sums.items()})  # train_loss first
        if val_fn is not None:
            # Rank 0 validates and sends the numbers: one source for the best-epoch and early-stopping
            # decisions, which every rank must take alike (numbers computed on each rank could differ
            # in the last bit with non-deterministic GPU kernels), and only rank 0 needs the val data.
            # The others would compute the same thing meanwhile, so no time is lost; they wait in the
            # broadcast, which must not outlast the process group's timeout (nccl: 10 min by default).
            val = distributed.broadcast_object(_validate(model, val_fn) if ranks.is_main else None)
            if cfg.monitor not in val:
                raise KeyError(f"val_fn returned {sorted(val)}, without the monitored key {cfg.monitor!r}")
            record.update(val)
            if p.best_metric is None or val[cfg.monitor] < p.best_metric:
                p.best_metric, p.best_epoch, p.bad_epochs = val[cfg.monitor], p.epoch + 1, 0
                best_state = _cpu_copy(model)
            else:
                p.bad_epochs += 1
                p.stopped_early = cfg.patience is not None and p.bad_epochs >= cfg.patience
        record.update(lr=lr(), seconds=p.seconds)
        if partial:
            record["partial"] = True
        p.history.append(record)
        emit(dict(record))

    def finished() -> bool:
        return (
            p.stopped_early
            or p.epoch >= cfg.max_epochs
            or (cfg.max_steps is not None and p.global_step >= cfg.max_steps)
        )

    model.train()
    while not finished():
        # The rest of this epoch's order; a resumed run skips the batches already done.
        batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, p.epoch, lengths)[p.batch_in_epoch :]
        # This rank's contiguous shard of each global batch (alone: the whole batch), and the factor
        # n_local * W / n_global its mean loss is scaled by before backward: DDP averages gradients over
        # the W ranks, so sum_r (n_r * W / N) * grad_r / W = sum_r n_r * grad_r / N, the gradient of the
        # global batch's mean loss (alone: exactly 1.0).
        shards = [distributed.shard(b, ranks.rank, ranks.world_size) for b in batches]
        scales = [len(s) * ranks.world_size / len(b) for s, b in zip(shards, batches)]
        # A global batch smaller than W leaves some ranks an empty shard: they run the batch's first
        # item at scale 0, to take part in DDP's gradient all-reduce while contributing nothing.
        loader = DataLoader(
            train_set,
            batch_sampler=[s or b[:1] for s, b in zip(shards, batches)],
            collate_fn=collate_fn,
            num_workers=cfg.num_workers,
            pin_memory=device.type == "cuda",
            # Seeds worker processes; also keeps the loader off the global RNG.
            generator=torch.Generator().manual_seed(_mix(cfg.seed, p.epoch)),
        )
        bar = tqdm(
            loader, total=n_batches, initial=p.batch_in_epoch, desc=f"epoch {p.epoch + 1}",
            disable=not cfg.progress or not ranks.is_main, leave=False, dynamic_ncols=True,
        )
        for i, batch in enumerate(bar):
            batch = to_device(batch, device)
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lr_factor(p.global_step, cfg, total_steps)
            loss, extra, grad_norm = _train_step(
                step_fn, batch, scales[i], opt, scaler, params, cfg.grad_clip, device, amp_dtype
            )
            # The global batch's means: each rank's weighted by its shard size (alone: unchanged).
            means = distributed.weighted_mean({"loss": loss, **extra}, len(shards[i]), device)
            loss, extra = means.pop("loss"), means
            p.global_step += 1
            p.batch_in_epoch += 1
            for k, v in {"loss": loss, **extra}.items():
                p.sums[k] = p.sums.get(k, 0.0) + v
            if p.global_step % cfg.log_every == 0:
                record = {"step": p.global_step, "epoch": p.epoch + 1, "loss": loss, **extra, "lr": lr()}
                if grad_norm is not None:
                    record["grad_norm"] = grad_norm
                emit(record)
                bar.set_postfix(loss=f"{loss:.4g}")
            if cfg.max_steps is not None and p.global_step >= cfg.max_steps:
                break
            if p.batch_in_epoch < n_batches and p.global_step % cfg.checkpoint_every == 0:
                save()
        bar.close()
        if p.batch_in_epoch < n_batches:  # max_steps hit mid-epoch
            break
        close_epoch(partial=False)
        p.epoch, p.batch_in_epoch, p.sums, p.seconds = p.epoch + 1, 0, {}, 0.0
        save()

    if p.batch_in_epoch > 0:  # stopped mid-epoch: checkpoint that state first, then report it
        save()
        close_epoch(partial=True)
    if best_state is not None:
        _load_trained(model, best_state)
    return TrainResult(
        history=p.history,
        best_epoch=p.best_epoch,
        best_metric=p.best_metric,
        steps=p.global_step,
        stopped_early=p.stopped_early,
        resumed_from=resumed_from,
        best_state=best_state,
    )


def _train_step(
    step_fn: nn.Module,
    batch: Any,
    scale: float,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    params: list[torch.Tensor],
    grad_clip: float | None,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[float, dict[str, float], float | None]:
    """One optimizer step on ``step_fn(batch)`` (= loss_fn(model, batch), maybe DDP-wrapped), its loss
    times ``scale`` for backward; returns (unscaled loss, extra metrics, grad norm before clipping)."""
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = step_fn(batch)
    loss, extra = out if isinstance(out, tuple) else (out, {})
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss * scale).backward()  # x * 1.0 is exactly x: single-process runs are unchanged
    grad_norm = None
    if grad_clip is not None:
        scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    scaler.step(opt)  # skipped by the scaler when fp16 gradients overflowed
    scaler.update()
    return float(loss.detach()), {k: float(v) for k, v in extra.items()}, grad_norm
