"""PocketSphinx: the off-the-shelf ASR baseline a user would otherwise pick.

PyPI ``pocketsphinx`` (5.x) ships a pre-trained US English model inside the
wheel (``pocketsphinx/model/en-us``: the ``en-us`` continuous HMM, the
``cmudict-en-us.dict`` dictionary and the ``en-us.lm.bin`` 3-gram LM), so this
works fully offline with no download. Model files can be overridden (``hmm``,
``lm``, ``dict``), e.g. with an LM built from SLURP's train transcripts.

    asr = PocketSphinxASR()
    asr.transcribe(wave)            # float32, 16 kHz, mono, in [-1, 1] -> "turn off the lights"
    asr.transcribe_batch([w1, w2])  # -> ["...", "..."]

One :class:`pocketsphinx.Decoder` is built once and reused for every
utterance (building it loads the model: ~0.5 s). Not thread-safe: use one
instance per thread or process.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["PocketSphinxASR", "SAMPLE_RATE", "to_pcm16"]

SAMPLE_RATE = 16_000
# CMUdict alternates ("read(2)") and fillers ("<sil>", "[noise]", "<s>") in hypotheses.
_ALTERNATE = re.compile(r"\(\d+\)")
_FILLER = re.compile(r"^(<.*>|\[.*\]|\+\+.*\+\+)$")


def to_pcm16(wave: np.ndarray) -> bytes:
    """Float audio in [-1, 1] -> little-endian signed 16-bit PCM bytes (clipped)."""
    x = np.asarray(wave, dtype=np.float32).reshape(-1)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def _clean(hypstr: str) -> str:
    words = [_ALTERNATE.sub("", w) for w in hypstr.split()]
    return " ".join(w for w in words if w and not _FILLER.match(w)).lower()


class PocketSphinxASR:
    """Offline CMU PocketSphinx recogniser with the bundled US English model.

    ``hmm``, ``lm`` and ``dict`` default to the model inside the installed
    package; ``**decoder_kwargs`` go to ``pocketsphinx.Decoder`` unchanged
    (e.g. ``beam=1e-60``, ``lw=6.5``).
    """

    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        hmm: str | Path | None = None,
        lm: str | Path | None = None,
        dict: str | Path | None = None,  # noqa: A002 - pocketsphinx's own name
        loglevel: str = "FATAL",
        silence_dbfs: float | None = -60.0,
        **decoder_kwargs,
    ) -> None:
        from pocketsphinx import Decoder, get_model_path

        kwargs = {
            "hmm": str(hmm or get_model_path("en-us/en-us")),
            "lm": str(lm or get_model_path("en-us/en-us.lm.bin")),
            "dict": str(dict or get_model_path("en-us/cmudict-en-us.dict")),
            "samprate": SAMPLE_RATE,
            "loglevel": loglevel,
            **decoder_kwargs,
        }
        for key in ("hmm", "lm", "dict"):
            if not Path(kwargs[key]).exists():
                raise FileNotFoundError(f"pocketsphinx {key} not found: {kwargs[key]}")
        self.model_files = {key: kwargs[key] for key in ("hmm", "lm", "dict")}
        self.silence_dbfs = silence_dbfs
        self.decoder = Decoder(**kwargs)

    def transcribe(self, wave: np.ndarray) -> str:
        """Transcribe one utterance (float32, 16 kHz, mono); "" when nothing is recognised."""
        wave = np.asarray(wave)
        if wave.ndim > 1:
            if 1 not in wave.shape:
                raise ValueError(f"expected mono audio, got shape {wave.shape}")
            wave = wave.reshape(-1)
        if wave.size == 0 or self._is_silent(wave):
            return ""
        self.decoder.start_utt()
        try:
            self.decoder.process_raw(to_pcm16(wave), no_search=False, full_utt=True)
        finally:
            self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return _clean(hyp.hypstr) if hyp is not None and hyp.hypstr else ""

    def _is_silent(self, wave: np.ndarray) -> bool:
        if self.silence_dbfs is None:
            return False
        rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
        return not np.isfinite(rms) or rms <= 10 ** (self.silence_dbfs / 20)

    def transcribe_batch(self, waves: Iterable[np.ndarray]) -> list[str]:
        """Transcribe utterances one after another with the same decoder."""
        return [self.transcribe(w) for w in waves]

    __call__ = transcribe_batch
