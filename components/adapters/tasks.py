"""Task names <-> ids, and the task(s) of the batch being run.

One TaskRouter per applied adapter, shared by all of its layers. Set the
current task once per batch: a name (the whole batch is one task) or a
LongTensor of ids (B,) (mixed batches; each layer runs each task on its rows).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

TASK_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")  # ModuleDict keys cannot hold "."


class TaskRouter:
    def __init__(self) -> None:
        self.names: list[str] = []
        self.current: str | torch.Tensor | None = None
        self._grouped: tuple | None = None  # _mixed()'s answer for the current ids tensor

    def add(self, task: str) -> int:
        if not isinstance(task, str) or not TASK_NAME.match(task):
            raise ValueError(f"task name {task!r} must be letters, digits, '_' or '-'")
        if task in self.names:
            raise ValueError(f"task {task!r} already exists; tasks: {self.names}")
        self.names.append(task)
        if self.current is None:
            self.current = task
        return len(self.names) - 1

    def id(self, task: str) -> int:
        if task not in self.names:
            raise KeyError(f"unknown task {task!r}; tasks: {self.names}")
        return self.names.index(task)

    def set(self, task: str | int | Sequence[int] | Sequence[str] | torch.Tensor) -> None:
        """The task of the next forward passes: a name, an id, or one id / name per batch row."""
        if isinstance(task, str):
            self.id(task)
            self.current = task
            return
        if isinstance(task, int):
            self.current = self._name(task)
            return
        if not isinstance(task, torch.Tensor):
            task = torch.tensor([self.id(t) if isinstance(t, str) else int(t) for t in task], dtype=torch.long)
        ids = task.long().flatten()
        if ids.numel() == 0:
            raise ValueError("empty task id tensor")
        bad = ids[(ids < 0) | (ids >= len(self.names))]
        if bad.numel():
            raise ValueError(f"task id {int(bad[0])} out of range: {len(self.names)} tasks {self.names}")
        first = ids[0]
        self.current = self.names[int(first)] if bool((ids == first).all()) else ids

    def _name(self, task_id: int) -> str:
        if not 0 <= task_id < len(self.names):
            raise ValueError(f"task id {task_id} out of range: {len(self.names)} tasks {self.names}")
        return self.names[task_id]

    def groups(self) -> list[tuple[str, torch.Tensor | None]]:
        """[(task, row indices or None = every row)] for the current batch."""
        if self.current is None:
            raise RuntimeError("no task: add one with add_task() before running the model")
        if isinstance(self.current, str):
            return [(self.current, None)]
        return self._mixed()[1]

    def row_tasks(self) -> tuple[list[str], torch.Tensor]:
        """A mixed batch's distinct tasks (as groups() orders them) and each row's index among them (B,)."""
        if not isinstance(self.current, torch.Tensor):
            raise RuntimeError(f"row_tasks is for a batch of mixed tasks; the batch is all {self.current!r}")
        _, groups, inverse = self._mixed()
        return [task for task, _ in groups], inverse

    def _mixed(self) -> tuple[torch.Tensor, list, torch.Tensor]:
        """(ids, groups, each row's group) of the current ids, computed once a batch, not once a layer: a new
        batch (set, keep_rows) assigns a new tensor."""
        ids = self.current
        if self._grouped is None or self._grouped[0] is not ids:
            unique, inverse = ids.unique(return_inverse=True)
            self._grouped = (ids, [(self.names[int(t)], (ids == t).nonzero().flatten()) for t in unique.tolist()], inverse)
        return self._grouped

    def ids_tensor(self, batch: int, device: torch.device) -> torch.Tensor:
        """Current task id of each row (B,)."""
        if isinstance(self.current, str):
            return torch.full((batch,), self.id(self.current), dtype=torch.long, device=device)
        if self.current is None or self.current.numel() != batch:
            raise ValueError(f"task ids for {0 if self.current is None else self.current.numel()} rows, batch has {batch}")
        return self.current.to(device)


def per_task(router: TaskRouter, x: torch.Tensor, batch_dim: int, fn) -> torch.Tensor:
    """fn(task, rows_of_x) for each task of the batch, reassembled in row order.

    x has its batch along ``batch_dim``; fn's output must too (other dims may
    differ, e.g. a LoRA's out_features). One task: a single call on all rows.
    """
    groups = router.groups()
    if len(groups) == 1:
        return fn(groups[0][0], x)
    if x.size(batch_dim) != router.current.numel():
        raise ValueError(f"task ids for {router.current.numel()} rows, but dim {batch_dim} of the input has {x.size(batch_dim)}")
    out = None
    for task, rows in groups:
        rows = rows.to(x.device)
        y = fn(task, x.index_select(batch_dim, rows))
        if out is None:
            shape = list(y.shape)
            shape[batch_dim] = x.size(batch_dim)
            out = y.new_zeros(shape)
        out = out.index_copy(batch_dim, rows, y)
    return out
