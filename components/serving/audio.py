"""Request audio -> the 16 kHz mono waveform the cascade hears, or a RequestError that says what is wrong.

Any format libsndfile reads (WAV, FLAC, OGG/Vorbis, ...), any sample rate (resampled), any channel count
(averaged). Limits are checked before decoding where the header tells (bytes, duration)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch
import torchaudio

SAMPLE_RATE = 16_000


class RequestError(ValueError):
    """Bad input; ``status`` is the 4xx a service answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class AudioLimits:
    max_seconds: float = 30.0
    max_bytes: int = 10_000_000
    min_seconds: float = 0.05  # shorter than a few STFT frames is not speech
    min_sample_rate: int = 4_000
    max_sample_rate: int = 192_000


def decode_audio(data: bytes, limits: AudioLimits = AudioLimits(), name: str = "audio") -> torch.Tensor:
    """Encoded audio bytes -> (L,) float32 at 16 kHz."""
    return to_model_rate(*read_audio(data, limits, name))


def read_audio(data: bytes, limits: AudioLimits = AudioLimits(), name: str = "audio") -> tuple[np.ndarray, int]:
    """Encoded audio bytes -> ((frames,) float32 mono, sample rate), every limit checked. numpy only: a
    service reads requests on its event loop and keeps torch on its torch thread (see torch_thread)."""
    if not data:
        raise RequestError(400, f"{name}: the file is empty")
    if len(data) > limits.max_bytes:
        raise RequestError(413, f"{name}: {len(data)} bytes; the limit is {limits.max_bytes}")
    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise RequestError(415, f"{name}: not an audio file this service reads (WAV, FLAC, OGG): {_reason(exc)}") from None
    fmt = f"{info.format} {info.subtype}"
    missing = _missing_wav_bytes(data)
    if missing:
        raise RequestError(422, f"{name}: truncated {fmt} audio: its data chunk lacks {missing} of its declared bytes")
    if not limits.min_sample_rate <= info.samplerate <= limits.max_sample_rate:
        raise RequestError(422, f"{name}: sample rate {info.samplerate} Hz; accepted {limits.min_sample_rate}-{limits.max_sample_rate} Hz")
    if info.frames / info.samplerate > limits.max_seconds:
        raise RequestError(422, f"{name}: {info.frames / info.samplerate:.2f} s of audio; the limit is {limits.max_seconds:g} s")
    try:
        audio, sr = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)  # (frames, channels)
    except (sf.LibsndfileError, RuntimeError) as exc:
        raise RequestError(422, f"{name}: corrupt {fmt} audio: {_reason(exc)}") from None
    if len(audio) < info.frames:
        raise RequestError(422, f"{name}: truncated {fmt} audio: the header says {info.frames} samples, the file holds {len(audio)}")
    if len(audio) < limits.min_seconds * sr:
        raise RequestError(422, f"{name}: {len(audio) / sr:.3f} s of audio; at least {limits.min_seconds:g} s is needed")
    if not np.isfinite(audio).all():
        raise RequestError(422, f"{name}: {fmt} audio holds NaN or infinite samples")
    return audio.mean(axis=1), sr


def to_model_rate(audio: np.ndarray, sample_rate: int) -> torch.Tensor:
    """(frames,) mono at ``sample_rate`` -> (L,) float32 tensor at 16 kHz."""
    wave = torch.from_numpy(audio)
    if sample_rate != SAMPLE_RATE:
        wave = torchaudio.functional.resample(wave, sample_rate, SAMPLE_RATE)
    return wave.contiguous()


def _missing_wav_bytes(data: bytes) -> int:
    """Bytes a RIFF/WAVE file's data chunk declares but does not hold (libsndfile reads such a file
    silently shortened); 0 for other formats and for streamed WAVs (size 0xFFFFFFFF)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return 0
    pos = 12
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if data[pos : pos + 4] == b"data":
            return 0 if size == 0xFFFFFFFF else max(0, size - (len(data) - pos - 8))
        pos += 8 + size + (size & 1)
    return 0


def _reason(exc: Exception) -> str:
    return getattr(exc, "error_string", None) or str(exc)  # libsndfile's own words, without the stream's repr

