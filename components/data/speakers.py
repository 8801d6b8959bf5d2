"""Synthetic speakers: a speaker is (engine, voice, pitch, rate) with a stable id.

Spec strings (the ``--voices`` flag) are comma-separated items
``engine:voice[:pitch_semitones[:rate]]`` or preset names, e.g.
``festival:kal_diphone,flite:slt:+2:1.1,demo``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ENGINES = ("festival", "flite", "espeak-ng")

# Voices from the Debian packages festival + festvox-{kallpc16k,kdlpc16k,us-slt-hts},
# flite and espeak-ng (see DESIGN.md for their measured speed).
KNOWN_VOICES = {
    "festival": ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"),
    "flite": ("slt", "rms", "awb", "kal16", "kal"),
    # espeak-ng takes any "<language>[+<variant>]"; these are the English accents.
    "espeak-ng": None,
}


@dataclass(frozen=True, order=True)
class Speaker:
    engine: str
    voice: str
    pitch: float = 0.0  # semitones, applied with sox after synthesis
    rate: float = 1.0  # tempo factor (1.2 = 20% faster), applied with sox

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown TTS engine {self.engine!r}; known: {', '.join(ENGINES)}")
        known = KNOWN_VOICES[self.engine]
        if known is not None and self.voice not in known:
            raise ValueError(f"unknown {self.engine} voice {self.voice!r}; known: {', '.join(known)}")
        if self.engine == "espeak-ng" and not re.fullmatch(r"[a-z]{2,3}(-[a-z0-9-]+)?(\+[A-Za-z0-9_-]+)?", self.voice):
            raise ValueError(f"bad espeak-ng voice {self.voice!r}; expected e.g. 'en-us' or 'en-gb-scotland+f3'")
        if not -12 <= self.pitch <= 12:
            raise ValueError(f"pitch {self.pitch} semitones is outside [-12, 12]")
        if not 0.5 <= self.rate <= 2.0:
            raise ValueError(f"rate {self.rate} is outside [0.5, 2.0]")

    @property
    def id(self) -> str:
        """Stable, filesystem-safe id, e.g. ``flite-slt-p+2-r1.1``."""
        voice = re.sub(r"[^A-Za-z0-9_-]", "_", self.voice)
        return f"{self.engine}-{voice}-p{self.pitch:+g}-r{self.rate:g}"


PRESETS: dict[str, tuple[Speaker, ...]] = {
    # A few clearly different voices from every engine: the default of `cascadapt synth`.
    "demo": (
        Speaker("festival", "kal_diphone"),
        Speaker("festival", "cmu_us_slt_arctic_hts"),
        Speaker("flite", "rms"),
        Speaker("flite", "awb"),
        Speaker("espeak-ng", "en-us+f3"),
        Speaker("espeak-ng", "en-gb-scotland+m3"),
    ),
    # Source domain for backbone pre-training: many voices, so the ASR learns speech, not a speaker.
    "source": (
        Speaker("festival", "kal_diphone"),
        Speaker("festival", "ked_diphone"),
        Speaker("festival", "ked_diphone", pitch=2, rate=1.1),
        Speaker("flite", "slt"),
        Speaker("flite", "slt", pitch=-2, rate=0.9),
        Speaker("flite", "kal16"),
        Speaker("espeak-ng", "en-us"),
        Speaker("espeak-ng", "en-us+f2"),
        Speaker("espeak-ng", "en-gb+m2"),
        Speaker("espeak-ng", "en-gb-x-rp+f4"),
        Speaker("espeak-ng", "en-gb-x-gbclan+m5"),
        Speaker("espeak-ng", "en-gb-x-gbcwmd+f1", rate=1.1),
    ),
    # Target domain: voices, pitches and rates unseen in the source.
    "target": (
        Speaker("festival", "cmu_us_slt_arctic_hts"),
        Speaker("festival", "cmu_us_slt_arctic_hts", pitch=-3, rate=0.9),
        Speaker("festival", "kal_diphone", pitch=4, rate=1.15),
        Speaker("flite", "rms"),
        Speaker("flite", "awb"),
        Speaker("flite", "rms", pitch=3, rate=1.1),
        Speaker("espeak-ng", "en-gb-scotland+f3"),
        Speaker("espeak-ng", "en-029+m3"),
    ),
}


def parse_voices(spec: str) -> list[Speaker]:
    """Parse a ``--voices`` spec into distinct speakers, in order of first mention."""
    speakers: list[Speaker] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item in PRESETS:
            found = list(PRESETS[item])
        else:
            parts = item.split(":")
            if len(parts) < 2 or len(parts) > 4:
                raise ValueError(
                    f"bad voice {item!r}: expected a preset ({', '.join(PRESETS)}) or engine:voice[:pitch[:rate]]"
                )
            try:
                nums = [float(p) for p in parts[2:]]
            except ValueError:
                raise ValueError(f"bad voice {item!r}: pitch and rate must be numbers") from None
            found = [Speaker(parts[0], parts[1], *nums)]
        speakers += [s for s in found if s not in speakers]
    if not speakers:
        raise ValueError(f"no voices in spec {spec!r}")
    return speakers
