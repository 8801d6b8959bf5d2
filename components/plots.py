"""A matplotlib figure as a self-contained HTML page with a PNG: what a ZenML dashboard visualization shows."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)


def figure_page(fig, title: str) -> str:
    """Render and close ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode()
    return f"<html><body><h2>{html.escape(title)}</h2><img src='data:image/png;base64,{png}'/></body></html>"
