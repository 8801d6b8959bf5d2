"""Transcribe recordings with an ASR backbone or a cascade (its SE first), in duration-sorted batches."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from components.models.cascade import Cascade
from components.models.whisper.text import TEXT_STYLES


@torch.no_grad()
def transcribe_waves(model, waves: Sequence[torch.Tensor], batch_size: int = 8, text: str = "slurp", on_batch=None) -> list[str]:
    """One transcript per 16 kHz waveform (L,), in input order. ``model``: an ASRBackbone, or a Cascade
    (its SE runs before its ASR). ``text``: "raw" (what the model decodes) or "slurp" (SLURP's style)."""
    if text not in TEXT_STYLES:
        raise ValueError(f"text style must be one of {sorted(TEXT_STYLES)}, got {text!r}")
    style = TEXT_STYLES[text]
    model.eval()
    order = sorted(range(len(waves)), key=lambda i: waves[i].numel())
    out: list[str] = [""] * len(waves)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        wave = pad_sequence([waves[i] for i in rows], batch_first=True)
        lengths = torch.tensor([waves[i].numel() for i in rows])
        if isinstance(model, Cascade):  # SE -> ASR
            texts = model.transcribe(wave, lengths)["asr"]["texts"]
        else:
            texts = model(wave, lengths)["texts"]
        for i, t in zip(rows, texts):
            out[i] = style(t)
        if on_batch is not None:
            on_batch(len(rows))
    return out
