"""Per-task scores of the cascade with a task-adapter bundle (or none: the frozen backbone)."""

from __future__ import annotations

import copy

from components.data.dataset import SpeechDataset
from components.models.cascade import Cascade
from components.multitask.bundle import TaskAdapters
from components.multitask.tasks import TASK
from components.training.recipes import evaluate_cascade


def evaluate_tasks(cascade: Cascade, bundle: TaskAdapters | None, test_ds: SpeechDataset, tasks: list[str] | None = None, system: str = "frozen", device: str = "auto") -> list[dict]:
    """[{system, task, n, wer, cer, intent_acc, slu_f1, ...}] a task: each task's test rows through the
    cascade running that task (default tasks: the bundle's, or every task of ``test_ds``)."""
    model = copy.deepcopy(cascade)
    if bundle is not None:
        bundle.attach(model)
        system = bundle.system
    tasks = tasks if tasks is not None else (bundle.tasks if bundle is not None else sorted({row[TASK] for row in test_ds.rows}))
    rows = []
    for task in tasks:
        subset = test_ds.where(TASK, task)
        if not len(subset):
            raise ValueError(f"task {task!r} has no test rows; test tasks: {sorted({row[TASK] for row in test_ds.rows})}")
        if bundle is not None:
            bundle.use(model, task)
        metrics, _ = evaluate_cascade(model, subset, device=device)
        rows.append({"system": system, "task": task, **metrics})
    return rows
