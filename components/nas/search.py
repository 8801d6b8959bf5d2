"""First-order DARTS search with Gumbel sampling, then the two-stage training's second stage.

Stage 1 (``search``), per train batch:
    weight step   sample an architecture (no gradient to alpha), task loss on the train batch,
                  AdamW on the candidates' parameters (adapters, fine-tune deltas) and ``extra``
    arch step     (after the warm-up: ``warmup_epochs``, or ``warmup_steps``) sample again, task loss on a nas_val batch +
                  lambda x expected parameters / full fine-tuning's, Adam on alpha only (the
                  weights need no gradient there, so the backward computes none)
The temperature anneals from tau_max to tau_min over the steps after warm-up. During
warm-up alpha is uniform, so every candidate's weights get trained before they compete.

With ``checkpoint_dir``, a checkpoint (alpha, the trained weights, both optimizers, RNG states,
the history) is written every ``checkpoint_every`` steps and at the end; ``search`` called again
on the same folder continues from it and ends where an uninterrupted search would have.
The train batches of an epoch and the nas_val batch of each architecture step are functions of
the seed and the step, so a resumed search sees the same data.

Stage 2 (``train_derived``): the derived architecture fixed, only the chosen candidates'
parameters (and ``extra``) train, with the shared training loop (checkpoints, early stopping).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate
from tqdm.auto import tqdm

from components.nas.architecture import Architecture, temperature
from components.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from components.training.loop import TrainConfig, TrainResult, epoch_batches, lr_groups, resolve_device, to_device, train


@dataclass
class SearchConfig:
    epochs: int = 3
    warmup_epochs: int = 1  # weights only: alpha stays uniform
    warmup_steps: int | None = None  # the warm-up in steps instead (for a search that max_steps cuts short)
    max_steps: int | None = None  # cut the search short (demo, tests)
    batch_size: int = 8
    bucket_by_length: bool = False  # train batches of similar length (needs train_set.lengths): less padding
    weight_lr: float = 1e-3  # AdamW on adapters, deltas and extra parameters
    lr_scale: dict[str, float] = field(default_factory=dict)  # weight_lr multipliers by name prefix or glob, as TrainConfig.lr_scale ('*.delta.*': 0.2)
    arch_lr: float = 3e-3  # Adam on alpha (DARTS: betas 0.5, 0.999)
    arch_weight_decay: float = 1e-3
    lam: float = 1.0  # parameter penalty weight
    tau_max: float = 5.0
    tau_min: float = 0.5
    hard: bool = True  # straight-through one-hot (runs one candidate) vs soft mixture (runs all)
    grad_clip: float | None = 5.0
    seed: int = 0
    device: str = "auto"
    record_every: int = 10  # steps between history records (architecture probabilities)
    checkpoint_dir: str | None = None  # resume from / write checkpoints here
    checkpoint_every: int = 50  # steps between checkpoints (plus one at the end)
    progress: bool = True


@dataclass
class SearchResult:
    architecture: dict[str, str]
    history: list[dict] = field(default_factory=list)  # {step, epoch, tau, probabilities, train_loss, val_loss, penalty}
    steps: int = 0
    resumed_from: int | None = None  # the step of the checkpoint this search started from


LossFn = Callable[[nn.Module, Any], Any]


@contextmanager
def no_weight_gradients(weights: Iterable[nn.Parameter]):
    """An architecture step: alpha's gradient only, so the backward computes no weight gradient."""
    weights = list(weights)
    for p in weights:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in weights:
            p.requires_grad_(True)


def _loss(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def search(
    model: nn.Module,
    arch: Architecture,
    loss_fn: LossFn,
    train_set: Dataset,
    val_set: Dataset,
    cfg: SearchConfig,
    collate_fn=None,
    extra: Iterable[nn.Parameter] = (),
    on_record: Callable[[dict], None] | None = None,
    val_loss_fn: LossFn | None = None,
) -> SearchResult:
    """Stage 1 (the module docstring). ``loss_fn`` trains the weights; ``val_loss_fn`` (default: loss_fn)
    is the architecture step's loss on nas_val, e.g. the loss of the mode the model will serve in."""
    val_loss_fn = val_loss_fn or loss_fn
    device = resolve_device(cfg.device)
    model.to(device)
    arch.to(device)
    weights = _unique(arch.candidate_parameters() + list(extra))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in weights:
        p.requires_grad_(True)
    ids = {id(p) for p in weights}
    named = [(n, p) for n, p in model.named_parameters() if id(p) in ids]  # ``extra`` must live in the model too
    if len(named) != len(weights):
        raise ValueError("every candidate and extra parameter must be a parameter of the model")
    weight_opt = torch.optim.AdamW(lr_groups(named, cfg.weight_lr, cfg.lr_scale), lr=cfg.weight_lr)
    arch_opt = torch.optim.Adam([arch.alpha], lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=cfg.arch_weight_decay)
    lengths = getattr(train_set, "lengths", None) if cfg.bucket_by_length else None
    if cfg.bucket_by_length and lengths is None:
        raise ValueError(f"bucket_by_length needs a train_set with a `lengths` attribute; {type(train_set).__name__} has none")
    n_batches = -(-len(train_set) // cfg.batch_size)
    n_val_batches = -(-len(val_set) // cfg.batch_size)
    total = cfg.epochs * n_batches if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * n_batches)
    warmup = cfg.warmup_epochs * n_batches if cfg.warmup_steps is None else cfg.warmup_steps
    if warmup >= total:  # alpha would stay uniform and derive() pick the first candidate everywhere
        source = f"warmup_steps={cfg.warmup_steps}" if cfg.warmup_steps is not None else f"warmup_epochs={cfg.warmup_epochs} x {n_batches} batches"
        raise ValueError(f"the search takes no architecture step: its warm-up of {warmup} steps ({source}) covers all {total} steps; lower it or raise max_steps/epochs")

    def val_batch(k: int):  # the k-th architecture step's nas_val batch: a new permutation every pass
        indices = epoch_batches(len(val_set), cfg.batch_size, cfg.seed + 1, k // n_val_batches)[k % n_val_batches]
        return to_device((collate_fn or default_collate)([val_set[i] for i in indices]), device)

    saved = {"alpha": arch.alpha, **dict(named)}  # what a checkpoint holds
    data_key = {"n_train": len(train_set), "n_val": len(val_set), "batch_size": cfg.batch_size, "seed": cfg.seed, "total": total,
                "bucket_by_length": cfg.bucket_by_length, "warmup": warmup, "lam": cfg.lam, "cells": arch.names, "candidates": list(arch.candidates)}
    result = SearchResult(architecture=arch.derive())
    step = 0
    ckpt = load_checkpoint(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    if ckpt is not None:
        if ckpt.state["data"] != data_key:
            raise ValueError(f"search checkpoint in {cfg.checkpoint_dir} was made with {ckpt.state['data']}, not {data_key}")
        with torch.no_grad():
            for name, p in saved.items():
                p.copy_(ckpt.model_state[name])
        weight_opt.load_state_dict(ckpt.state["weight_optimizer"])
        arch_opt.load_state_dict(ckpt.state["arch_optimizer"])
        set_rng_state(ckpt.state["rng"])
        step = result.resumed_from = ckpt.step
        result.history = ckpt.state["history"]
    else:
        torch.manual_seed(cfg.seed)

    def save() -> None:
        state = {"format": 1, "data": data_key, "weight_optimizer": weight_opt.state_dict(), "arch_optimizer": arch_opt.state_dict(),
                 "rng": rng_state(), "history": result.history}
        save_checkpoint(cfg.checkpoint_dir, step, {n: p.detach() for n, p in saved.items()}, state)

    bar = tqdm(total=total, initial=step, desc="search", disable=not cfg.progress)
    model.train()
    while step < total:
        epoch, done = divmod(step, n_batches)
        batches = epoch_batches(len(train_set), cfg.batch_size, cfg.seed, epoch, lengths)[done:]  # a resumed epoch skips what it did
        # its own generator: a DataLoader draws a base seed, which must not move the global RNG that Gumbel samples use
        for batch in DataLoader(train_set, batch_sampler=batches, collate_fn=collate_fn, generator=torch.Generator()):
            if step >= total:
                break
            tau = temperature(max(0, step - warmup), total - warmup, cfg.tau_max, cfg.tau_min)
            with torch.no_grad():
                arch.sample(tau, cfg.hard)
            weight_opt.zero_grad(set_to_none=True)
            train_loss = _loss(loss_fn(model, to_device(batch, device)))
            if train_loss.requires_grad:  # every sampled cell frozen (and no extra): nothing to train this step
                train_loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
                weight_opt.step()
            record = {"step": step + 1, "epoch": epoch + 1, "tau": tau, "train_loss": float(train_loss.detach())}
            if step >= warmup:
                arch_opt.zero_grad(set_to_none=True)
                arch.sample(tau, cfg.hard)
                with no_weight_gradients(weights):
                    val_loss = _loss(val_loss_fn(model, val_batch(step - warmup)))
                    penalty = arch.penalty(cfg.lam)
                    (val_loss + penalty).backward()
                arch_opt.step()
                record |= {"val_loss": float(val_loss.detach()), "penalty": float(penalty.detach())}
            step += 1
            bar.update(1)
            if step % cfg.record_every == 0 or step == total:
                record["probabilities"] = arch.probabilities().tolist()
                result.history.append(record)
                if on_record is not None:
                    on_record(record)
            if cfg.checkpoint_dir and (step % cfg.checkpoint_every == 0 or step == total):
                save()
    bar.close()
    result.architecture, result.steps = arch.derive(), step
    return result


def train_derived(
    model: nn.Module,
    arch: Architecture,
    choices: Mapping[str, str],
    loss_fn: LossFn,
    train_set: Dataset,
    cfg: TrainConfig,
    collate_fn=None,
    val_fn=None,
    extra: Iterable[nn.Parameter] = (),
    on_metrics=None,
) -> TrainResult:
    """Stage 2: the architecture fixed to ``choices``; only the chosen candidates' parameters (and extra) train."""
    arch.fix(choices)
    chosen = _unique(arch.candidate_parameters(choices) + list(extra))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in chosen:
        p.requires_grad_(True)
    if not chosen:
        raise ValueError("the derived architecture trains nothing (every cell frozen and no extra parameters)")
    return train(model, loss_fn, train_set, cfg, collate_fn=collate_fn, val_fn=val_fn, on_metrics=on_metrics)


def _unique(params: list[nn.Parameter]) -> list[nn.Parameter]:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out
