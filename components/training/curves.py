"""Training curves as a PNG inside a self-contained HTML page (a ZenML dashboard visualization)."""

from __future__ import annotations

from components.plots import figure_page, plt


def curves_html(histories: dict[str, list[dict]], title: str) -> str:
    """One panel per run: every numeric per-epoch metric except bookkeeping, against the epoch."""
    skip = {"epoch", "step", "lr", "seconds", "partial"}
    fig, axes = plt.subplots(1, max(1, len(histories)), figsize=(5 * max(1, len(histories)), 3.6), squeeze=False, layout="constrained")
    for ax, (name, history) in zip(axes[0], histories.items()):
        keys = sorted({k for rec in history for k, v in rec.items() if k not in skip and isinstance(v, (int, float))})
        for k in keys:
            points = [(rec["epoch"], rec[k]) for rec in history if k in rec]
            ax.plot(*zip(*points), marker="o", ms=3, label=k)
        ax.set(title=name, xlabel="epoch")
        ax.legend(fontsize=7)
    return figure_page(fig, title)
