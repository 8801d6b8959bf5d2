"""The tasks of a multi-task run: groups of manifest rows (a speaker, a speaker in one kind of noise),
named so that adapters can key their parameters on them."""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

TASK = "task"  # the manifest column that names each row's task


def task_names(df: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """One name a row from the columns ``by`` ('flite-rms-p+3-r1.1' + 'pink' -> 'flite-rms-p_3-r1_1_pink')."""
    if not by:
        raise ValueError("task_by: name at least one manifest column (e.g. [speaker] or [speaker, noise])")
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise ValueError(f"task_by: the manifest has no column {missing}; columns: {sorted(df.columns)}")
    raw = df[list(by)].astype(str).agg("_".join, axis=1)
    names = raw.map(lambda s: re.sub(r"[^A-Za-z0-9_\-]", "_", s))
    clash = pd.DataFrame({"raw": raw, "name": names}).drop_duplicates().groupby("name")["raw"].nunique()
    if (clash > 1).any():
        raise ValueError(f"task_by {list(by)}: different groups get the same task name {clash[clash > 1].index.tolist()}")
    return names


def assign_tasks(
    splits: dict[str, pd.DataFrame], by: Sequence[str], max_tasks: int | None = None, new_task: str | None = None, min_train_rows: int = 2
) -> tuple[dict[str, pd.DataFrame], list[str], str]:
    """Name every row's task and keep the tasks with at least ``min_train_rows`` train rows and a test row.

    splits: {"train", "nas_val", "test"} manifests. Returns (the splits with a ``task`` column and only
    the kept tasks' rows, the tasks trained jointly, the task added afterwards). ``max_tasks`` keeps the
    tasks with the most train rows (the new one included); ``new_task`` defaults to the last kept name.
    """
    named = {k: df.assign(**{TASK: task_names(df, by)}) for k, df in splits.items()}
    train_rows = named["train"][TASK].value_counts()
    tested = set(named["test"][TASK])
    kept = sorted((t for t, n in train_rows.items() if n >= min_train_rows and t in tested), key=lambda t: (-train_rows[t], t))
    if new_task is not None and new_task not in kept:
        raise ValueError(f"new_task {new_task!r} is not a task with >= {min_train_rows} train rows and a test row; tasks: {sorted(kept)}")
    if max_tasks is not None:
        kept = kept[:max_tasks] if new_task is None or new_task in kept[:max_tasks] else [*kept[: max_tasks - 1], new_task]
    kept = sorted(kept)
    if len(kept) < 2:
        raise ValueError(f"task_by {list(by)}: {len(kept)} task(s) with >= {min_train_rows} train rows and a test row; a multi-task run needs at least 2 (one is added later)")
    new_task = new_task or kept[-1]
    return {k: df[df[TASK].isin(kept)].reset_index(drop=True) for k, df in named.items()}, [t for t in kept if t != new_task], new_task
