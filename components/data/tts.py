"""Text-to-speech with the Debian engines festival, flite and espeak-ng.

Every engine writes its native WAV; sox then applies the speaker's pitch and
tempo, the audio is resampled to 16 kHz mono float, and the result is normalised to a
fixed speech level and written as 16-bit FLAC. Festival runs one batch process
per call (starting it per sentence is ~50x slower); flite and espeak-ng start
fast enough to run once per sentence.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from components.data.atomic import atomic_path
from components.data.speakers import Speaker

SAMPLE_RATE = 16_000
SPEECH_RMS = 10 ** (-26 / 20)  # -26 dBFS, the usual speech level (ITU-T P.56)
PEAK_LIMIT = 0.5  # headroom for noise mixed in later

REQUIRED_PROGRAMS = {"festival": "festival", "flite": "flite", "espeak-ng": "espeak-ng"}


class SynthesisError(RuntimeError):
    """An engine failed or produced no audio for a sentence."""


def check_engine(engine: str) -> None:
    for prog in (REQUIRED_PROGRAMS[engine], "sox"):
        if shutil.which(prog) is None:
            raise SynthesisError(f"{prog!r} is not installed (apt-get install {prog}); needed for engine {engine}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run(cmd: list[str], what: str, stdin: str | None = None) -> None:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SynthesisError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")


def _raw_festival(speaker: Speaker, texts: list[str], raw_paths: list[Path]) -> None:
    lines = [f"(voice_{speaker.voice})"]
    for text, path in zip(texts, raw_paths):
        lines.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) {_scheme_string(str(path))} 'riff)")
    _run(["festival", "--pipe"], f"festival voice {speaker.voice}", stdin="\n".join(lines) + "\n")


def _raw_flite(speaker: Speaker, texts: list[str], raw_paths: list[Path]) -> None:
    for text, path in zip(texts, raw_paths):
        _run(["flite", "-voice", speaker.voice, "-t", text, "-o", str(path)], f"flite voice {speaker.voice} on {text!r}")


def _raw_espeak(speaker: Speaker, texts: list[str], raw_paths: list[Path]) -> None:
    for text, path in zip(texts, raw_paths):
        _run(["espeak-ng", "-v", speaker.voice, "-w", str(path), "--", text], f"espeak-ng voice {speaker.voice} on {text!r}")


_RAW = {"festival": _raw_festival, "flite": _raw_flite, "espeak-ng": _raw_espeak}


def _to_16k(speaker: Speaker, raw: Path, tmp_dir: Path) -> np.ndarray:
    """Pitch, tempo and resampling; returns float32 mono at 16 kHz.

    A plain voice is resampled in-process (a polyphase filter, ~5x faster than
    starting sox per file); pitch and tempo need sox's effects.
    """
    if speaker.pitch == 0 and speaker.rate == 1.0:
        audio, sr = sf.read(raw, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if sr != SAMPLE_RATE:
            g = math.gcd(sr, SAMPLE_RATE)
            audio = resample_poly(audio, SAMPLE_RATE // g, sr // g).astype(np.float32)
        return audio
    out = tmp_dir / (raw.stem + ".16k.wav")
    effects = []
    if speaker.pitch:
        effects += ["pitch", f"{speaker.pitch * 100:g}"]
    if speaker.rate != 1.0:
        effects += ["tempo", "-s", f"{speaker.rate:g}"]
    effects += ["rate", "-v", str(SAMPLE_RATE)]
    _run(["sox", str(raw), "-c", "1", "-e", "floating-point", "-b", "32", str(out), *effects], f"sox on {raw.name}")
    audio, sr = sf.read(out, dtype="float32")
    assert sr == SAMPLE_RATE, (sr, out)
    return audio


def normalise(audio: np.ndarray) -> np.ndarray:
    """Scale to SPEECH_RMS, then down if the peak would pass PEAK_LIMIT."""
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    if rms == 0.0:
        raise SynthesisError("engine produced silence")
    gain = min(SPEECH_RMS / rms, PEAK_LIMIT / float(np.max(np.abs(audio))))
    return (audio * gain).astype(np.float32)


def synthesize(speaker: Speaker, texts: list[str], out_paths: list[Path]) -> None:
    """Speak ``texts[i]`` into ``out_paths[i]`` (16 kHz mono 16-bit FLAC), atomically.

    One call per speaker and batch: festival loads its voice once per call.
    """
    check_engine(speaker.engine)
    with tempfile.TemporaryDirectory(prefix="cascadapt-tts-") as tmp:
        tmp_dir = Path(tmp)
        raw_paths = [tmp_dir / f"{i:05d}.wav" for i in range(len(texts))]
        _RAW[speaker.engine](speaker, texts, raw_paths)
        for text, raw, out in zip(texts, raw_paths, out_paths):
            if not raw.is_file() or raw.stat().st_size <= 44:
                raise SynthesisError(f"{speaker.id} produced no audio for {text!r}")
            audio = normalise(_to_16k(speaker, raw, tmp_dir))
            with atomic_path(Path(out)) as part:
                sf.write(part, audio, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
