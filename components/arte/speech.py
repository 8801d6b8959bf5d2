"""The teacher's examples as speech: each said by the voice, with the noise and SNR, that its choice names.

    cfg = speech_config(parse_voices("target"), snrs=[0, 10, 20], noises=["white", "babble"])
    manifest = speak(examples, out_dir, cfg)   # a corpus manifest (split "train"), paths relative to out_dir
    out_dir = root / folder_name("tailored", examples, cfg)   # content-addressed: never another set's audio

The corpus builder does the work (synthesis in batch processes, noise mixed at the SNR and measured back,
resumable), with the speaker and condition taken from the choice instead of drawn by seed. The folder also
gets the examples' SLURP records (slurp.jsonl), so the generated set can be read, scored and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from components.arte.teacher import Example
from components.data.corpus import CorpusConfig, Utterance, build_utterances, settings
from components.data.manifest import read_manifest
from components.data.slurp import record_to_release, write_slurp
from components.data.speakers import Speaker


def speech_config(speakers: Sequence[Speaker], snrs: Sequence[float], noises: Sequence[str], seed: int = 0, workers: int | None = None) -> CorpusConfig:
    return CorpusConfig(speakers=list(speakers), snrs=[float(s) for s in snrs], noise_kinds=list(noises), seed=seed, **({"workers": workers} if workers else {}))


def utterances(examples: Sequence[Example], cfg: CorpusConfig) -> list[Utterance]:
    by_id = {s.id: s for s in cfg.speakers}
    out = []
    for e in examples:
        if e.choice["voice"] not in by_id:
            raise ValueError(f"example {e.record.slurp_id}: voice {e.choice['voice']!r} is not one of the corpus speakers {sorted(by_id)}")
        out.append(Utterance(e.record, by_id[e.choice["voice"]], e.choice["noise"], float(e.choice["snr"]), "train"))
    return out


def speak(examples: Sequence[Example], out_dir: str | os.PathLike, cfg: CorpusConfig, progress: bool = False) -> pd.DataFrame:
    out_dir = Path(out_dir)
    manifest = build_utterances(utterances(examples, cfg), out_dir, cfg, progress)
    write_slurp([e.record for e in examples], out_dir / "slurp.jsonl")
    return read_manifest(manifest)


def folder_name(prefix: str, examples: Sequence[Example], cfg: CorpusConfig) -> str:
    """prefix-<12 hex>: a digest of the records, the choices and the corpus settings."""
    digest = hashlib.sha256(json.dumps(settings(cfg), sort_keys=True).encode())
    for e in examples:
        digest.update(json.dumps([record_to_release(e.record), e.choice], sort_keys=True).encode())
    return f"{prefix}-{digest.hexdigest()[:12]}"
