"""A one-figure overview of a corpus manifest: durations, SNRs, and who says what in which split."""

from __future__ import annotations

import base64
import html
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd


def overview_png(df: pd.DataFrame) -> bytes:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), layout="constrained", gridspec_kw={"width_ratios": [1, 1, 1.3]})
    for engine, group in df.groupby("engine"):
        axes[0].hist(group["duration"], bins=20, alpha=0.6, label=engine)
    axes[0].set(title="duration by engine", xlabel="seconds", ylabel="utterances")
    axes[0].legend()
    for kind, group in df.groupby("noise"):
        axes[1].scatter(group["snr"], group["snr_measured"], s=12, alpha=0.7, label=kind)
    lo, hi = df["snr"].min() - 2, df["snr"].max() + 2
    axes[1].plot([lo, hi], [lo, hi], "k--", lw=0.8)
    axes[1].set(title="SNR measured vs requested", xlabel="requested dB", ylabel="measured dB")
    axes[1].legend()
    counts = df.groupby(["speaker", "split"]).size().unstack(fill_value=0)
    counts.plot.barh(stacked=True, ax=axes[2])
    axes[2].set(title="utterances per speaker and split", xlabel="utterances", ylabel="")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def overview_html(df: pd.DataFrame, title: str) -> str:
    png = base64.b64encode(overview_png(df)).decode()
    stats = df.groupby("split").agg(
        utterances=("utt_id", "size"), sentences=("slurp_id", "nunique"), hours=("duration", lambda d: round(d.sum() / 3600, 3))
    )
    return (
        f"<html><body><h2>{html.escape(title)}</h2>"
        f"<p>{len(df)} utterances, {df['speaker'].nunique()} speakers, {df['intent'].nunique()} intents</p>"
        f"{stats.to_html()}<img src='data:image/png;base64,{png}'/></body></html>"
    )
