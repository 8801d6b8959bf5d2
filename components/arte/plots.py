"""The teacher's policy before and after alignment, as a dashboard page: one bar chart per factor."""

from __future__ import annotations

import numpy as np

from components.plots import figure_page, plt


def policy_shift_html(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]], title: str = "teacher policy before and after alignment") -> str:
    """before/after: SamplingPolicy.probabilities() -> {factor: {value: p}}; bars side by side per value."""
    factors = list(before)
    fig, axes = plt.subplots(len(factors), 1, figsize=(max(6, 0.35 * max(len(before[f]) for f in factors) + 3), 2.6 * len(factors)), squeeze=False)
    for ax, factor in zip(axes[:, 0], factors):
        values = list(before[factor])
        x = np.arange(len(values))
        ax.bar(x - 0.2, [before[factor][v] for v in values], width=0.4, label="before")
        ax.bar(x + 0.2, [after[factor][v] for v in values], width=0.4, label="after")
        ax.set_xticks(x, values, rotation=60 if len(values) > 6 else 0, ha="right" if len(values) > 6 else "center", fontsize=7)
        ax.set_ylabel(f"p({factor})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_page(fig, title)
