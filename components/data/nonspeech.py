"""Audio in which nobody speaks: what a voice assistant must answer with "no speech", to calibrate and
test a recogniser's no-speech decision.

    nonspeech_set(per_kind, seed, talkers) -> [(name, wave (L,) float32 at 16 kHz)]

Kinds: silence (digital zero), hiss (white noise), pink and brown noise, hum (mains, 50 Hz and its
harmonics), tone (a sine), chirp (a sweep), chord (three notes with harmonics under a note envelope:
music-like), clicks (a rhythmic pulse train) and babble (8 talkers summed, no word intelligible; needs
``talkers``). Every kind but silence comes at several levels (rms dBFS), 1-4 s long.
"""

from __future__ import annotations

import numpy as np

from components.data.noise import babble, pink, white

SAMPLE_RATE = 16000
LEVELS_DBFS = (-55.0, -40.0, -25.0)  # from a quiet room to loud noise
KINDS = ("silence", "hiss", "pink", "brown", "hum", "tone", "chirp", "chord", "clicks", "babble")
BABBLE_TALKERS = 8


def _brown(n: int, rng: np.random.Generator) -> np.ndarray:
    x = np.cumsum(rng.standard_normal(n))
    return (x - np.linspace(x[0], x[-1], n)).astype(np.float32)  # integrated white noise, drift removed


def _signal(kind: str, n: int, rng: np.random.Generator, talkers: list[np.ndarray] | None) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    if kind == "hiss":
        return white(n, rng)
    if kind == "pink":
        return pink(n, rng)
    if kind == "brown":
        return _brown(n, rng)
    if kind == "hum":
        return sum(np.sin(2 * np.pi * 50 * k * t) / k for k in range(1, 6))
    if kind == "tone":
        return np.sin(2 * np.pi * rng.uniform(200, 2000) * t)
    if kind == "chirp":
        f0, f1 = rng.uniform(100, 500), rng.uniform(2000, 6000)
        return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * t[-1])))
    if kind == "chord":
        out = np.zeros(n)
        note = int(0.25 * SAMPLE_RATE)
        for start in range(0, n, note):  # a new chord each quarter second, decaying
            root = 220 * 2 ** (rng.integers(0, 12) / 12)
            span = np.arange(min(note, n - start)) / SAMPLE_RATE
            for ratio in (1.0, 1.26, 1.5):
                out[start : start + span.size] += sum(np.sin(2 * np.pi * root * ratio * h * span) / h**2 for h in (1, 2, 3)) * np.exp(-4 * span)
        return out
    if kind == "clicks":
        out = np.zeros(n)
        out[:: int(SAMPLE_RATE / rng.uniform(2, 8))] = 1.0
        return out
    if kind == "babble":
        if not talkers or len(talkers) < BABBLE_TALKERS:
            raise ValueError(f"babble needs at least {BABBLE_TALKERS} talkers' clips, got {len(talkers or [])}")
        chosen = rng.choice(len(talkers), BABBLE_TALKERS, replace=False)
        return babble(n, rng, [talkers[i] for i in chosen])
    raise ValueError(f"unknown non-speech kind {kind!r}; use one of {KINDS}")


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    """x scaled to an rms of ``dbfs`` (dB relative to full scale, 1.0)."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x * (10 ** (dbfs / 20) / max(rms, 1e-12))).astype(np.float32)


def nonspeech_set(per_kind: int, seed: int, talkers: list[np.ndarray] | None = None, kinds: tuple[str, ...] = KINDS) -> list[tuple[str, np.ndarray]]:
    """``per_kind`` clips of each kind at each level (silence: once, at no level); babble only with ``talkers``."""
    rng = np.random.default_rng(seed)
    clips = []
    for kind in kinds:
        if kind == "babble" and not talkers:
            continue
        for level in ((None,) if kind == "silence" else LEVELS_DBFS):
            for i in range(per_kind):
                n = int(rng.uniform(1.0, 4.0) * SAMPLE_RATE)
                wave = np.zeros(n, dtype=np.float32) if kind == "silence" else at_level(_signal(kind, n, rng, talkers), level)
                clips.append((f"{kind}" + ("" if level is None else f"@{level:g}dBFS") + f"#{i}", wave))
    return clips
