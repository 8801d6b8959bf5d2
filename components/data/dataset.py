"""A torch Dataset over a corpus manifest: audio pairs, transcripts and SLU labels."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import soundfile as sf
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset


class SpeechDataset(Dataset):
    """Rows of a manifest; audio paths resolve against ``root`` (the manifest's folder).

    Each item: noisy and clean waveforms (L,) and the row's metadata (utt_id, slurp_id, text,
    scenario, action, entities; task: the multi-task run's name for the row's group) for the NLU
    and the scorers. ASR targets are the backbone's business (``asr.encode_targets(texts)``).
    """

    def __init__(self, manifest: pd.DataFrame, root: str | Path) -> None:
        self.rows = manifest.reset_index(drop=True).to_dict("records")
        self.root = Path(root)
        self.lengths = [float(row["duration"]) for row in self.rows]  # seconds, for length bucketing

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, column: str, *values) -> "SpeechDataset":
        """The rows whose ``column`` is one of ``values`` (same root)."""
        subset = copy.copy(self)
        subset.rows = [row for row in self.rows if row[column] in values]
        subset.lengths = [float(row["duration"]) for row in subset.rows]
        return subset

    def _audio(self, rel: str) -> torch.Tensor:
        audio, sr = sf.read(self.root / rel, dtype="float32")
        if sr != 16_000:
            raise ValueError(f"{self.root / rel}: sample rate {sr}, expected 16000")
        return torch.from_numpy(audio)

    def __getitem__(self, i: int) -> dict:
        row = self.rows[i]
        clean, noisy = self._audio(row["clean_path"]), self._audio(row["noisy_path"])
        entities = json.loads(row["entities"]) if isinstance(row["entities"], str) else row["entities"]
        return {
            "clean": clean,
            "noisy": noisy,
            "meta": {k: row[k] for k in ("utt_id", "slurp_id", "text", "scenario", "action", "speaker")}
            | {"entities": entities, "task": row.get("task", row["speaker"]), "engine": row.get("engine", row["speaker"].split("-")[0])},
        }


def collate(items: list[dict]) -> dict:
    """Pad to the longest item: clean/noisy (B, L), lengths (B,), meta (B dicts)."""
    return {
        "clean": pad_sequence([it["clean"] for it in items], batch_first=True),
        "noisy": pad_sequence([it["noisy"] for it in items], batch_first=True),
        "lengths": torch.tensor([it["clean"].numel() for it in items]),
        "meta": [it["meta"] for it in items],
    }
