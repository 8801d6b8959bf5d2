"""Architecture weights over the search and the error-vs-parameters Pareto front, as HTML with a PNG."""

from __future__ import annotations

from collections.abc import Sequence

from components.plots import figure_page, plt


def architecture_weights_html(history: list[dict], cells: list[str], candidates: list[str], title: str = "architecture weights") -> str:
    """One panel a cell (four panels a row): each candidate's probability against the search step."""
    n = max(1, len(cells))
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[len(cells):]:
        ax.axis("off")
    steps = [rec["step"] for rec in history if "probabilities" in rec]
    for i, (ax, cell) in enumerate(zip(axes.flat, cells)):
        for k, candidate in enumerate(candidates):
            ax.plot(steps, [rec["probabilities"][i][k] for rec in history if "probabilities" in rec], label=candidate)
        ax.set(title=cell, xlabel="search step", ylabel="probability", ylim=(0, 1))
        ax.legend(fontsize=7)
    return figure_page(fig, title)


def pareto_html(points: list[dict], errors: Sequence[str] = ("nlu_cer", "wer"), title: str = "error vs trainable parameters") -> str:
    """points: {"label", "trainable_pct", *errors}; one panel an error, its non-dominated points joined by a line."""
    fig, axes = plt.subplots(1, len(errors), figsize=(6 * len(errors), 4), squeeze=False, layout="constrained")
    xs = [p["trainable_pct"] for p in points]
    for ax, error in zip(axes.flat, errors):
        ys = [100 * p[error] for p in points]
        ax.scatter(xs, ys)
        for p, x, y in zip(points, xs, ys):
            ax.annotate(p["label"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        front = sorted(pareto_front(points, error), key=lambda p: p["trainable_pct"])
        ax.plot([p["trainable_pct"] for p in front], [100 * p[error] for p in front], "--", color="gray")
        ax.set(xlabel="trainable parameters, % of full fine-tuning", ylabel=f"{error} (%)", xscale="symlog")
    return figure_page(fig, title)


def pareto_front(points: list[dict], error: str) -> list[dict]:
    """The points no other point beats on both fewer parameters and lower error."""
    return [p for p in points if not any(q["trainable_pct"] <= p["trainable_pct"] and q[error] <= p[error] and q is not p and (q["trainable_pct"], q[error]) != (p["trainable_pct"], p[error]) for q in points)]
