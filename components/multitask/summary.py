"""The comparison of multi-task methods: one row a system (task-averaged scores, parameters per task and
in total), the curve of trainable parameters against the number of tasks, the winner, and plots."""

from __future__ import annotations

import math

import pandas as pd

from components.plots import figure_page, plt

SCORES = ("wer", "cer", "intent_acc", "slu_f1", "nlu_cer")
TASK_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)


def summarize(per_task: pd.DataFrame, counts: dict[str, dict], tasks: list[str], new_task: str) -> pd.DataFrame:
    """per_task: rows {system, task, wer, ...}; counts: {system: {"shared", "tasks": {task: n}}} (frozen: none).

    A row a system: the mean of each score over the jointly trained ``tasks`` (macro average), the new
    task's WER and CER, shared parameters, parameters a task (the mean over its tasks) and in total."""
    rows = []
    for system, group in per_task.groupby("system", sort=False):
        joint = group[group["task"].isin(tasks)]
        new = group[group["task"] == new_task]
        count = counts.get(system, {"shared": 0, "tasks": {}})
        per_task_params = sum(count["tasks"].values()) / max(len(count["tasks"]), 1)
        rows.append({
            "system": system,
            "tasks": int(group["task"].nunique()),
            **{k: (float(joint[k].mean()) if len(joint) else math.nan) for k in SCORES},
            "new_task_wer": float(new["wer"].iloc[0]) if len(new) else math.nan,
            "new_task_cer": float(new["cer"].iloc[0]) if len(new) else math.nan,
            "shared_params": int(count["shared"]),
            "per_task_params": per_task_params,
            "total_params": int(count["shared"] + sum(count["tasks"].values())),
        })
    return pd.DataFrame(rows)


def parameters_vs_tasks(summary: pd.DataFrame, task_counts=TASK_COUNTS) -> pd.DataFrame:
    """Trainable parameters to serve N tasks: shared + N x per task (N in ``task_counts``), and a task's share."""
    rows = []
    for r in summary.itertuples():
        if r.per_task_params == 0 and r.shared_params == 0:
            continue  # frozen
        for n in task_counts:
            total = r.shared_params + n * r.per_task_params
            rows.append({"system": r.system, "n_tasks": n, "total_params": total, "params_per_task": total / n})
    return pd.DataFrame(rows)


def pick_winner(summary: pd.DataFrame, eligible: list[str], metric: str = "wer") -> str:
    """The eligible system with the lowest task-averaged ``metric`` (ties: fewer parameters a task)."""
    candidates = summary[summary["system"].isin(eligible)].dropna(subset=[metric])
    if candidates.empty:
        raise ValueError(f"no eligible system to pick a winner from (eligible: {eligible}; systems: {summary['system'].tolist()})")
    return str(candidates.sort_values([metric, "per_task_params"]).iloc[0]["system"])


def comparison_html(summary: pd.DataFrame, title: str = "mean WER vs trainable parameters a task") -> str:
    points = summary[summary["per_task_params"] > 0].dropna(subset=["wer"])
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    ax.scatter(points["per_task_params"], 100 * points["wer"], color="tab:blue")
    for r in points.itertuples():
        ax.annotate(r.system, (r.per_task_params, 100 * r.wer), fontsize=7, xytext=(3, 3), textcoords="offset points")
    frozen = summary[summary["system"] == "frozen"]
    if len(frozen):
        ax.axhline(100 * float(frozen["wer"].iloc[0]), color="grey", ls="--", lw=1, label="frozen")
        ax.legend(fontsize=7)
    ax.set(xscale="log", xlabel="trainable parameters a task", ylabel="mean WER over tasks (%)")
    return figure_page(fig, title)


def parameters_html(curve: pd.DataFrame, title: str = "trainable parameters vs number of tasks") -> str:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for system, group in curve.groupby("system", sort=False):
        axes[0].plot(group["n_tasks"], group["total_params"], marker="o", ms=3, label=system)
        axes[1].plot(group["n_tasks"], group["params_per_task"], marker="o", ms=3, label=system)
    axes[0].set(xscale="log", yscale="log", xlabel="tasks", ylabel="trainable parameters in total")
    axes[1].set(xscale="log", yscale="log", xlabel="tasks", ylabel="trainable parameters a task (total / N)")
    axes[1].legend(fontsize=7)
    return figure_page(fig, title)
