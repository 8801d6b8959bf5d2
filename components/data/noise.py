"""Additive noise at a requested SNR, and the SNR measured back.

SNR here is 10 log10(sum clean^2 / sum noise^2) over the whole utterance. The
clean signal is never changed: only the noise is scaled.
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("white", "pink", "babble")


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power spectrum: white noise shaped by 1/sqrt(f) in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spectrum.size, dtype=np.float64)
    f[0] = 1.0  # keep DC finite; it is removed below
    shaped = np.fft.irfft(spectrum / np.sqrt(f), n)
    shaped -= shaped.mean()
    return shaped.astype(np.float32)


def babble(n: int, rng: np.random.Generator, talkers: list[np.ndarray]) -> np.ndarray:
    """Sum of other utterances, each looped to length n from a random offset."""
    if not talkers:
        raise ValueError("babble noise needs at least one other utterance")
    out = np.zeros(n, dtype=np.float64)
    for t in talkers:
        looped = np.resize(t, n + t.size)  # np.resize repeats the signal
        start = int(rng.integers(0, t.size))
        out += looped[start : start + n]
    return out.astype(np.float32)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + g * noise with g chosen so that the SNR is snr_db."""
    if clean.shape != noise.shape:
        raise ValueError(f"clean {clean.shape} and noise {noise.shape} differ in shape")
    p_noise = power(noise)
    if p_noise == 0.0:
        raise ValueError("noise is silent")
    gain = np.sqrt(power(clean) / (p_noise * 10 ** (snr_db / 10)))
    return (clean + gain * noise).astype(np.float32)


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of noisy against its clean reference, in dB."""
    residual = power(noisy - clean)
    if residual == 0.0:
        return float("inf")
    return 10 * np.log10(power(clean) / residual)


def make_noise(kind: str, n: int, rng: np.random.Generator, talkers: list[np.ndarray] | None = None) -> np.ndarray:
    if kind == "white":
        return white(n, rng)
    if kind == "pink":
        return pink(n, rng)
    if kind == "babble":
        return babble(n, rng, talkers or [])
    raise ValueError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
