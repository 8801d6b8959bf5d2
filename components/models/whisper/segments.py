"""Long audio: a clip longer than Whisper's window is cut at its quietest points into windows, which are
transcribed pass by pass (one window of every row per pass, so a batch keeps its rows and each row its
task's adapter) and joined.

    cut_points(wave (L,), window, search) -> [(start, end)]: each at most ``window`` samples, covering [0, L)
    join_passes([hypotheses of pass k], [windows per row]) -> the row's hypotheses, as if decoded whole
"""

from __future__ import annotations

import torch
from torch.nn.utils.rnn import pad_sequence

FRAME = 320  # 20 ms at 16 kHz: the energy frame a cut is chosen on


def cut_points(wave: torch.Tensor, window: int, search: int) -> list[tuple[int, int]]:
    """Windows of ``wave`` (L,): each cut falls in the quietest 20 ms frame of the last ``search`` samples
    before the window would end, so no window is longer than ``window`` nor (but the last) shorter than
    ``window - search``."""
    if search >= window or search < FRAME:
        raise ValueError(f"search ({search} samples) must be in [{FRAME}, window = {window})")
    n, start, out = wave.numel(), 0, []
    while n - start > window:
        lo = start + window - search
        frames = wave[lo : lo + (search // FRAME) * FRAME].reshape(-1, FRAME).float().pow(2).mean(1)  # (search / FRAME,)
        cut = lo + int(frames.argmin()) * FRAME + FRAME // 2
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


def join_passes(passes: list[dict], windows: list[int]) -> dict:
    """Hypotheses of each pass (components/models/whisper/model.py ``hypotheses``: B rows, row b's k-th window
    in pass k) -> one hypothesis a row: states and tokens in order, word spans shifted onto the joined
    states, texts joined with a space; a row heard speech if any of its windows did, and its no-speech
    probability is its windows' lowest."""
    states, words, texts, tokens, speech, no_speech = [], [], [], [], [], []
    for b, count in enumerate(windows):
        mine = passes[:count]
        parts = [p["states"][b, : int(p["lengths"][b])] for p in mine]  # (1 + H_k, d) each
        offsets = [0]
        for part in parts[:-1]:
            offsets.append(offsets[-1] + part.shape[0])
        states.append(torch.cat(parts))
        words.append([(w, s + o, e + o) for p, o in zip(mine, offsets) for w, s, e in p["words"][b]])
        texts.append(" ".join(t for t in (p["texts"][b] for p in mine) if t))
        tokens.append([t for p in mine for t in p["tokens"][b]])
        speech.append(any(p["speech"][b] for p in mine))
        probs = [p["no_speech_prob"][b] for p in mine if p["no_speech_prob"] is not None]
        no_speech.append(min(probs) if probs else None)
    return {
        "states": pad_sequence(states, batch_first=True),  # (B, S, d)
        "lengths": torch.tensor([s.shape[0] for s in states], device=states[0].device),
        "words": words,
        "texts": texts,
        "tokens": tokens,
        "no_speech_prob": None if any(p is None for p in no_speech) else no_speech,
        "speech": speech,
    }
