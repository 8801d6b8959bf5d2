"""The corpus manifest: one row per synthesized utterance, as jsonl, csv or parquet.

Audio paths are stored relative to the manifest's folder so that a corpus can
move (DVC pull, another machine) without rewriting its manifest.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from components.data.atomic import atomic_path
from components.data.jsonl import iter_jsonl

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = {
    "utt_id": str,
    "slurp_id": int,
    "speaker": str,  # Speaker.id: engine-voice-pitch-rate
    "engine": str,
    "voice": str,
    "pitch": float,
    "rate": float,
    "task": str,  # adaptation task: the speaker
    "clean_path": str,
    "noisy_path": str,
    "duration": float,  # seconds
    "sample_rate": int,
    "noise": str,  # white | pink | babble
    "snr": float,  # requested, dB
    "snr_measured": float,  # measured back from the written files, dB
    "text": str,
    "scenario": str,
    "action": str,
    "intent": str,  # scenario_action
    "entities": str,  # JSON list of {"type", "filler"}
    "split": str,  # train | nas_val | test
}
FORMATS = (".jsonl", ".csv", ".parquet")


class ManifestError(ValueError):
    """A manifest that cannot be read: malformed line, missing column, unknown format."""


def _check_format(path: Path) -> None:
    if path.suffix not in FORMATS:
        raise ManifestError(f"{path}: unknown manifest format {path.suffix!r}; use one of {', '.join(FORMATS)}")


def read_manifest(path: str | os.PathLike, required: Iterable[str] = tuple(COLUMNS)) -> pd.DataFrame:
    """Read a manifest; raise ManifestError naming the file (and line) on malformed input, or the
    ``required`` columns it lacks (a new, unlabelled batch needs fewer than a corpus).

    Values are not type-checked here: validation reports bad rows one by one.
    """
    import pandas as pd  # here, not at the top: a one-file transcribe reads its manifest without it (read_manifest_rows)

    path = _existing(path)
    if path.suffix == ".jsonl":
        df = pd.DataFrame([row for _, row in iter_jsonl(path, ManifestError)])
    elif path.suffix == ".csv":
        try:
            df = pd.read_csv(path, keep_default_na=False, dtype={"utt_id": str, "text": str})
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ManifestError(f"{path}: malformed CSV ({e})") from None
    else:
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise ManifestError(f"{path}: unreadable parquet ({e})") from None
    _check_columns(path, df.columns, required)
    return df


def read_manifest_rows(path: str | os.PathLike, required: Iterable[str] = tuple(COLUMNS)) -> list[dict]:
    """read_manifest's rows as dicts; a JSONL manifest is read without pandas (~0.3 s of a one-command start-up)."""
    path = _existing(path)
    if path.suffix != ".jsonl":
        return read_manifest(path, required).to_dict("records")
    rows = [row for _, row in iter_jsonl(path, ManifestError)]
    _check_columns(path, {c for row in rows for c in row}, required)
    return rows


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    _check_format(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest")
    return path


def _check_columns(path: Path, columns: Iterable[str], required: Iterable[str]) -> None:
    columns = set(columns)
    missing = [c for c in required if c not in columns]
    if missing:
        raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")


def write_manifest(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    path = Path(path)
    _check_format(path)
    df = df[list(COLUMNS)]
    with atomic_path(path) as tmp:
        if path.suffix == ".jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        elif path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return path


def resolve_audio(manifest_path: str | os.PathLike, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else Path(manifest_path).parent / p


def rows_within(df: pd.DataFrame, max_seconds: float | None) -> tuple[pd.DataFrame, int]:
    """The rows whose clip lasts at most ``max_seconds`` (None: all), re-indexed, and how many were dropped."""
    if max_seconds is None:
        return df, 0
    keep = df["duration"] <= max_seconds
    return df[keep].reset_index(drop=True), int((~keep).sum())
