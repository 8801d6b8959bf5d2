"""Per-utterance features that drift when the audio or the requests change: one row an utterance.

    batch = read_batch("incoming/manifest.jsonl")             # utt_id + an audio path, labels optional
    table = utterance_features(batch, "incoming/manifest.jsonl", cascade)

Columns (FEATURES): duration_s, level_dbfs (RMS), snr_est_db, and, from the production cascade's own
output so that labelled and unlabelled batches compare alike: speaking_rate_wps (hypothesis words a
second), text_words, intent (predicted), confidence (p(scenario) x p(action) of the prediction).
Without a cascade the text columns come from the batch's gold text and intent, and confidence is absent.

snr_est_db is a blind estimate: the 95th over the 10th percentile of 20 ms frame energies, in dB
(speech frames over pauses). It tracks the mixing SNR monotonically on our corpora, not exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from components.data.manifest import ManifestError, read_manifest, resolve_audio

AUDIO_COLUMNS = ("noisy_path", "audio_path")  # the first one a batch has is read
NUMERIC = ["duration_s", "level_dbfs", "snr_est_db", "speaking_rate_wps", "text_words", "confidence"]
CATEGORICAL = ["intent"]
FEATURES = NUMERIC + CATEGORICAL
FRAME_S = 0.02


class DriftInputError(ValueError):
    """A batch that cannot be compared: the message names the file, row and field."""


def read_batch(path: str | Path) -> pd.DataFrame:
    """A batch manifest (jsonl, csv or parquet) with utt_id and noisy_path or audio_path; text and intent optional."""
    try:
        batch = read_manifest(path, required=["utt_id"])
    except ManifestError as exc:
        raise DriftInputError(str(exc)) from None
    if not any(c in batch.columns for c in AUDIO_COLUMNS):
        raise DriftInputError(f"{path}: no audio column; a batch needs one of {', '.join(AUDIO_COLUMNS)}")
    if batch.empty:
        raise DriftInputError(f"{path}: the batch has no rows")
    return batch


def audio_features(audio: np.ndarray, sample_rate: int) -> dict[str, float]:
    """(L,) mono -> duration_s, level_dbfs, snr_est_db."""
    frame = max(1, int(FRAME_S * sample_rate))
    n = len(audio) // frame
    energies = np.square(audio[: n * frame].reshape(n, frame)).mean(axis=1) + 1e-12 if n else np.array([1e-12])
    rms = float(np.sqrt(np.mean(np.square(audio)))) if len(audio) else 0.0
    return {
        "duration_s": len(audio) / sample_rate,
        "level_dbfs": 20 * np.log10(rms + 1e-9),
        "snr_est_db": float(10 * np.log10(np.percentile(energies, 95) / np.percentile(energies, 10))),
    }


def _read_audio(batch_path: Path, row_number: int, row: dict, column: str) -> tuple[np.ndarray, int]:
    rel = row.get(column)
    if not isinstance(rel, str) or not rel:
        raise DriftInputError(f"{batch_path}: row {row_number} ({row.get('utt_id')}): field {column!r} is empty")
    path = resolve_audio(batch_path, rel)
    try:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise DriftInputError(f"{batch_path}: row {row_number} ({row.get('utt_id')}): field {column!r}: cannot read {path}: {exc}") from None
    if len(audio) == 0:
        raise DriftInputError(f"{batch_path}: row {row_number} ({row.get('utt_id')}): {path} holds no samples")
    return audio.mean(axis=1), sr


def utterance_features(batch: pd.DataFrame, batch_path: str | Path, cascade=None, batch_size: int = 16) -> pd.DataFrame:
    """One row of FEATURES (and utt_id) an utterance of ``batch``; rows are numbered from 1 in errors."""
    batch_path = Path(batch_path)
    column = next(c for c in AUDIO_COLUMNS if c in batch.columns)
    rows = batch.to_dict("records")
    waves, table = [], []
    for i, row in enumerate(rows, start=1):
        audio, sr = _read_audio(batch_path, i, row, column)
        table.append({"utt_id": str(row["utt_id"]), **audio_features(audio, sr)})
        waves.append((audio, sr))
    if cascade is not None:
        for start in range(0, len(waves), batch_size):
            for record, found in zip(table[start : start + batch_size], model_features(cascade, waves[start : start + batch_size])):
                record.update(found)
    else:
        for i, (record, row) in enumerate(zip(table, rows), start=1):
            text, intent = row.get("text"), row.get("intent")
            if not isinstance(text, str) or not isinstance(intent, str):
                raise DriftInputError(f"{batch_path}: row {i} ({row['utt_id']}): without a model, text and intent are needed (field {'text' if not isinstance(text, str) else 'intent'!r})")
            record.update(text_words=len(text.split()), intent=intent)
    for record in table:
        record["speaking_rate_wps"] = record["text_words"] / max(record["duration_s"], 1e-3)
    return pd.DataFrame(table, columns=["utt_id", *[f for f in FEATURES if cascade is not None or f != "confidence"]])


@torch.no_grad()
def model_features(cascade, waves: list[tuple[np.ndarray, int]]) -> list[dict]:
    """text_words, intent and confidence of the cascade's predictions for (audio, sample rate) pairs."""
    import torchaudio
    from torch.nn.utils.rnn import pad_sequence

    from components.models.nlu import decode

    device = next(cascade.parameters()).device
    tensors = []
    for audio, sr in waves:
        wave = torch.from_numpy(np.ascontiguousarray(audio))
        tensors.append(torchaudio.functional.resample(wave, sr, 16_000) if sr != 16_000 else wave)
    lengths = torch.tensor([len(w) for w in tensors], device=device)
    out = cascade.eval()(pad_sequence(tensors, batch_first=True).to(device), lengths)
    nlu = out["nlu"]
    confidence = nlu["scenario_logits"].float().softmax(-1).amax(-1) * nlu["action_logits"].float().softmax(-1).amax(-1)
    decoded = decode(nlu, [w or ["<empty>"] for w in out["words"]], cascade.labels)
    return [
        {"text_words": len(words), "intent": f"{scenario}_{action}", "confidence": float(c)}
        for words, (scenario, action, _), c in zip(out["words"], decoded, confidence)
    ]
