"""Data-parallel training on torch's own engine: torch.distributed under torchrun, DDP in the loop.

    info = init_from_env()        # under torchrun: joins the process group; else the single-process default
    try:
        train(...)                # components.training.loop notices the group and trains data-parallel
    finally:
        cleanup()

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process it starts;
``init_process_group`` reads them. The collectives below are what the loop needs beyond DDP's own
gradient all-reduce; each one is a no-op (returns its input) when the group is not initialised, so the
loop calls them unconditionally.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0  # global rank, 0 .. world_size - 1
    world_size: int = 1
    local_rank: int = 0  # rank on this node: the cuda device it uses

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, emits metrics and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


SINGLE = DistInfo()


def current() -> DistInfo:
    """The process group this process is in, or SINGLE when none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def init_from_env(device: str = "auto") -> DistInfo:
    """Join the default process group when torchrun's environment says WORLD_SIZE > 1 (gloo on CPU;
    nccl on CUDA, one device a process, picked by LOCAL_RANK); else return SINGLE. ``device`` as in
    TrainConfig.device. Calling it again in an initialised process returns the same group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE
    if dist.is_initialized():
        return current()
    use_cuda = torch.cuda.is_available() if device == "auto" else torch.device(device).type == "cuda"
    if use_cuda:
        local = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(local)  # so that "cuda" (the loop's device) means this process's GPU
        dist.init_process_group("nccl", device_id=local)
    else:
        dist.init_process_group("gloo")
    return current()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch_indices: Sequence[int], rank: int, world: int) -> list[int]:
    """Rank ``rank``'s contiguous slice of one global batch: sizes differ by at most one, the first
    ``len % world`` ranks taking the extra item (10 items on 4 ranks: 3, 3, 2, 2; 1 item on 2: 1, 0)."""
    base, extra = divmod(len(batch_indices), world)
    start = rank * base + min(rank, extra)
    return list(batch_indices[start : start + base + (rank < extra)])


# --------------------------------------------------------------------------- collectives (no-ops alone)


def weighted_mean(values: dict[str, float], weight: float, device: torch.device) -> dict[str, float]:
    """sum_r weight_r * values_r / sum_r weight_r over the ranks, key by key. Every rank must pass the
    same keys in the same order (they are packed into one float64 tensor for a single all-reduce)."""
    if not current().distributed:
        return values
    packed = torch.tensor([weight, *(weight * v for v in values.values())], dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    means = (packed[1:] / packed[0]).tolist()
    return dict(zip(values, means))


def broadcast_object(obj: T, src: int = 0) -> T:
    """``src``'s ``obj`` on every rank (pickled through the group; on nccl, via the current cuda device)."""
    if not current().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """[rank 0's obj, rank 1's obj, ...] on every rank."""
    info = current()
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BatchNorm running statistics...) into every rank's ``module``. DDP does
    this at the start of each forward; after the last step of an epoch, each rank still holds the
    statistics of its own shard."""
    if not current().distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=src)
