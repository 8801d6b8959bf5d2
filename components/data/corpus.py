"""Build a synthesized speech corpus from SLURP text: clean and noisy audio plus a manifest.

Layout under ``out_dir``::

    clean/<speaker>/<utt_id>.flac             16 kHz mono speech at -26 dBFS
    noisy/<speaker>/<utt_id>_<noise><snr>.flac  the same speech plus noise
    manifest.<jsonl|csv|parquet>

Everything is a pure function of (records, config): which speakers say which
sentence, the noise kind and SNR, and the noise samples all come from seeds
derived from (seed, slurp_id, speaker). Work is resumable: files are written
atomically, and a file that exists is never synthesized again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from components.data.atomic import atomic_path, atomic_write_text
from components.data.manifest import COLUMNS, write_manifest
from components.data.noise import NOISE_KINDS, make_noise, measured_snr, mix_at_snr
from components.data.slurp import SlurpRecord
from components.data.speakers import Speaker
from components.data.splits import DEFAULT_FRACTIONS, split_of
from components.data.tts import SAMPLE_RATE, SynthesisError, synthesize

T = TypeVar("T")
BABBLE_TALKERS = 4


@dataclass
class CorpusConfig:
    speakers: list[Speaker]
    snrs: list[float] = field(default_factory=lambda: [0.0, 5.0, 10.0, 20.0])
    noise_kinds: list[str] = field(default_factory=lambda: list(NOISE_KINDS))
    speakers_per_text: int = 1  # how many speakers say each sentence
    seed: int = 0
    split_fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    workers: int = os.cpu_count() or 1
    chunk_size: int = 32  # sentences per festival process
    manifest_format: str = "jsonl"

    def __post_init__(self) -> None:
        if not self.speakers:
            raise ValueError("no speakers given")
        if not 1 <= self.speakers_per_text <= len(self.speakers):
            raise ValueError(f"speakers_per_text must be in [1, {len(self.speakers)}], got {self.speakers_per_text}")
        if not self.snrs:
            raise ValueError("no SNRs given")
        bad = [k for k in self.noise_kinds if k not in NOISE_KINDS]
        if bad or not self.noise_kinds:
            raise ValueError(f"unknown noise kind(s) {bad}; known: {', '.join(NOISE_KINDS)}")
        if self.manifest_format not in ("jsonl", "csv", "parquet"):
            raise ValueError(f"manifest format must be jsonl, csv or parquet, got {self.manifest_format!r}")


@dataclass(frozen=True)
class Utterance:
    record: SlurpRecord
    speaker: Speaker
    noise: str
    snr: float
    split: str

    @property
    def utt_id(self) -> str:
        return f"{self.record.slurp_id}-{self.speaker.id}"

    @property
    def clean_rel(self) -> str:
        return f"clean/{self.speaker.id}/{self.utt_id}.flac"

    @property
    def noisy_rel(self) -> str:
        return f"noisy/{self.speaker.id}/{self.utt_id}_{self.noise}{self.snr:g}.flac"


def _int_hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


def plan(records: Iterable[SlurpRecord], cfg: CorpusConfig) -> list[Utterance]:
    """Decide, deterministically, who says what with which noise."""
    records = list(records)
    seen: set[int] = set()
    for r in records:
        if r.slurp_id in seen:
            raise ValueError(f"slurp_id {r.slurp_id} appears twice in the input")
        seen.add(r.slurp_id)
    n = len(cfg.speakers)
    conditions = [(k, s) for k in cfg.noise_kinds for s in cfg.snrs]
    utts = []
    for r in records:
        first = _int_hash(cfg.seed, "speaker", r.slurp_id) % n
        split = split_of(r.slurp_id, cfg.seed, cfg.split_fractions)
        for k in range(cfg.speakers_per_text):
            spk = cfg.speakers[(first + k) % n]
            kind, snr = conditions[_int_hash(cfg.seed, "noise", r.slurp_id, spk.id) % len(conditions)]
            utts.append(Utterance(r, spk, kind, float(snr), split))
    return utts


def _parallel(fn: Callable[[T], object], jobs: list[T], workers: int, desc: str, total: int, weight: Callable[[T], int], progress: bool) -> list[str]:
    """Run fn over jobs in threads (the work is in subprocesses and numpy); return error messages."""
    errors = []
    with tqdm(total=total, desc=desc, unit="utt", disable=not progress) as bar, ThreadPoolExecutor(workers) as pool:
        futures = {pool.submit(fn, job): job for job in jobs}
        for fut in as_completed(futures):
            exc = fut.exception()
            if exc is not None:
                errors.append(str(exc))
            bar.update(weight(futures[fut]))
    return errors


def _synthesize_clean(utts: list[Utterance], out_dir: Path, cfg: CorpusConfig, progress: bool) -> None:
    todo = [u for u in utts if not (out_dir / u.clean_rel).is_file()]
    by_speaker: dict[Speaker, list[Utterance]] = defaultdict(list)
    for u in todo:
        by_speaker[u.speaker].append(u)
    chunks = [group[i : i + cfg.chunk_size] for group in by_speaker.values() for i in range(0, len(group), cfg.chunk_size)]

    def run(chunk: list[Utterance]) -> None:
        try:
            synthesize(chunk[0].speaker, [u.record.sentence for u in chunk], [out_dir / u.clean_rel for u in chunk])
        except SynthesisError as e:
            raise SynthesisError(f"{chunk[0].speaker.id} on utterances {chunk[0].utt_id}..{chunk[-1].utt_id}: {e}") from e

    errors = _parallel(run, chunks, cfg.workers, "synthesize", len(todo), len, progress)
    if errors:
        raise SynthesisError(f"{len(errors)} synthesis batch(es) failed (finished files are kept; rerun to resume):\n" + "\n".join(errors))


def _read(path: Path) -> np.ndarray:
    audio, sr = sf.read(path, dtype="float32")
    if sr != SAMPLE_RATE:
        raise ValueError(f"{path}: sample rate {sr}, expected {SAMPLE_RATE}")
    return audio


def _add_noise(utts: list[Utterance], out_dir: Path, cfg: CorpusConfig, progress: bool) -> None:
    todo = [u for u in utts if not (out_dir / u.noisy_rel).is_file()]

    def run(u: Utterance) -> None:
        clean = _read(out_dir / u.clean_rel)
        rng = np.random.default_rng([cfg.seed, u.record.slurp_id, _int_hash(u.speaker.id) % 2**32])
        talkers = []
        if u.noise == "babble":
            others = [o for o in utts if o.record.slurp_id != u.record.slurp_id]
            if not others:
                raise ValueError(f"{u.utt_id}: babble noise needs other utterances in the corpus")
            picks = rng.choice(len(others), size=min(BABBLE_TALKERS, len(others)), replace=False)
            talkers = [_read(out_dir / others[i].clean_rel) for i in sorted(picks)]
        noisy = mix_at_snr(clean, make_noise(u.noise, clean.size, rng, talkers), u.snr)
        with atomic_path(out_dir / u.noisy_rel) as part:
            sf.write(part, noisy, SAMPLE_RATE, subtype="PCM_16", format="FLAC")

    errors = _parallel(run, todo, cfg.workers, "add noise", len(todo), lambda _: 1, progress)
    if errors:
        raise RuntimeError(f"{len(errors)} noisy file(s) failed:\n" + "\n".join(errors))


def _row(u: Utterance, out_dir: Path) -> dict:
    clean = _read(out_dir / u.clean_rel)
    noisy = _read(out_dir / u.noisy_rel)
    r = u.record
    return {
        "utt_id": u.utt_id,
        "slurp_id": r.slurp_id,
        "speaker": u.speaker.id,
        "engine": u.speaker.engine,
        "voice": u.speaker.voice,
        "pitch": u.speaker.pitch,
        "rate": u.speaker.rate,
        "task": u.speaker.id,
        "clean_path": u.clean_rel,
        "noisy_path": u.noisy_rel,
        "duration": round(clean.size / SAMPLE_RATE, 4),
        "sample_rate": SAMPLE_RATE,
        "noise": u.noise,
        "snr": u.snr,
        "snr_measured": round(measured_snr(clean, noisy), 3),
        "text": r.sentence,
        "scenario": r.scenario,
        "action": r.action,
        "intent": r.intent,
        "entities": json.dumps([{"type": e.type, "filler": e.filler} for e in r.entities], ensure_ascii=False),
        "split": u.split,
    }


def settings(cfg: CorpusConfig) -> dict:
    """What decides the audio: a corpus folder holds audio of one set of settings only."""
    return {
        "speakers": [s.id for s in cfg.speakers],
        "snrs": [float(s) for s in cfg.snrs],
        "noise_kinds": list(cfg.noise_kinds),
        "speakers_per_text": cfg.speakers_per_text,
        "seed": cfg.seed,
        "split_fractions": cfg.split_fractions,
    }


def _claim(out_dir: Path, cfg: CorpusConfig) -> None:
    """Record the settings in out_dir/corpus.json; refuse a folder built with other settings."""
    path = out_dir / "corpus.json"
    wanted = settings(cfg)
    if path.is_file():
        found = json.loads(path.read_text())
        if found != wanted:
            diff = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
            raise ValueError(
                f"{out_dir} holds a corpus built with other settings (found, wanted): {diff}; "
                "choose another output folder, nothing was changed"
            )
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(wanted, indent=1) + "\n")


def build_corpus(records: Iterable[SlurpRecord], out_dir: str | os.PathLike, cfg: CorpusConfig, progress: bool = True) -> Path:
    """Synthesize what is missing under out_dir and (re)write its manifest; return the manifest path."""
    return build_utterances(plan(records, cfg), out_dir, cfg, progress)


def build_utterances(utts: list[Utterance], out_dir: str | os.PathLike, cfg: CorpusConfig, progress: bool = True) -> Path:
    """build_corpus for utterances planned elsewhere (who says what, with which noise, in which split),
    e.g. by ARTE's teacher; their speakers, noise kinds and SNRs must be among cfg's."""
    out_dir = Path(out_dir)
    speakers, conditions = set(cfg.speakers), {(k, float(s)) for k in cfg.noise_kinds for s in cfg.snrs}
    seen: set[str] = set()
    for u in utts:
        if u.utt_id in seen:
            raise ValueError(f"utterance {u.utt_id} is planned twice")
        seen.add(u.utt_id)
        if u.speaker not in speakers or (u.noise, u.snr) not in conditions:
            raise ValueError(f"utterance {u.utt_id}: speaker {u.speaker.id} / {u.noise} at {u.snr:g} dB is not among the corpus settings")
    _claim(out_dir, cfg)
    _synthesize_clean(utts, out_dir, cfg, progress)
    _add_noise(utts, out_dir, cfg, progress)
    with ThreadPoolExecutor(cfg.workers) as pool:
        rows = list(tqdm(pool.map(lambda u: _row(u, out_dir), utts), total=len(utts), desc="measure", unit="utt", disable=not progress))
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return write_manifest(df, out_dir / f"manifest.{cfg.manifest_format}")
