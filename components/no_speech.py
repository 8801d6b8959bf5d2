"""A cascade's no-speech probe (components/models/no_speech_probe.py), fitted on clips as the cascade
receives them (before its speech enhancement) and calibrated at the serving threshold.

    sets = probe_clip_sets(train_ds, nas_val_ds)   # commands, nonspeech, calibration, calibration_nonspeech
    probe, report = fit_no_speech_probe(**sets, threshold=NO_SPEECH_THRESHOLD)
    cascade.set_no_speech_probe(probe)

The fit: training commands against synthesized non-speech (nonspeech_set, seed FIT_SEED, babble from
training clips). The calibration: the bias shifted so that at ``threshold`` (the serving default) at most
``max_false_rejection`` of the held-out commands (nas_val) are rejected; a fresh non-speech set (seed
CALIBRATION_SEED) is only scored. benchmarks/no_speech.py measures on the test split and seed 1.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from components.data.dataset import SpeechDataset
from components.data.nonspeech import BABBLE_TALKERS, nonspeech_set
from components.models.no_speech_probe import NoSpeechProbe

FIT_SEED, CALIBRATION_SEED = 10, 0


def _clips(ds: SpeechDataset, every: int, field: str = "noisy") -> list[np.ndarray]:
    return [ds[i][field].numpy() for i in range(0, len(ds), every)]


def probe_clip_sets(train: SpeechDataset, nas_val: SpeechDataset, max_train_clips: int = 800, nonspeech_per_kind: int = 8) -> dict[str, list[np.ndarray]]:
    """{commands: up to ``max_train_clips`` training clips (evenly spread), nonspeech: ``nonspeech_per_kind`` clips
    of each kind and level, calibration: every nas_val clip, calibration_nonspeech: half as many per kind}."""
    talkers = _clips(train, max(1, len(train) // 80), "clean")  # babble sums 8 of these at a time
    talkers = talkers if len(talkers) >= BABBLE_TALKERS else None  # too few training clips: no babble
    return {
        "commands": _clips(train, max(1, -(-len(train) // max_train_clips))),
        "nonspeech": [w for _, w in nonspeech_set(nonspeech_per_kind, FIT_SEED, talkers)],
        "calibration": _clips(nas_val, 1),
        "calibration_nonspeech": [w for _, w in nonspeech_set(max(1, nonspeech_per_kind // 2), CALIBRATION_SEED, talkers)],
    }


def clip_statistics(waves: Sequence[np.ndarray], batch_size: int = 16, progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """Clips (L,) float32 at 16 kHz -> (N, 4 n_mels): what the probe reads of each."""
    extractor, rows = NoSpeechProbe(), []
    with torch.inference_mode():
        for start in range(0, len(waves), batch_size):
            batch = [torch.as_tensor(np.asarray(w, dtype=np.float32)) for w in waves[start : start + batch_size]]
            rows.append(extractor.statistics(pad_sequence(batch, batch_first=True), torch.tensor([len(w) for w in batch])))
            if progress:
                progress(len(batch))
    return torch.cat(rows)


def fit_no_speech_probe(
    commands: Sequence[np.ndarray], nonspeech: Sequence[np.ndarray], calibration: Sequence[np.ndarray], calibration_nonspeech: Sequence[np.ndarray] = (),
    *, threshold: float, max_false_rejection: float = 0.01, progress: Callable[[int], None] | None = None,
) -> tuple[NoSpeechProbe, dict]:
    """-> (the probe, calibrated at ``threshold``, the serving one; {clip counts, the calibration's bias shift,
    false rejections, non-speech rejected})."""
    if not len(calibration):
        raise ValueError("calibrating a no-speech probe needs held-out commands, got none")
    stats = {name: clip_statistics(clips, progress=progress) if len(clips) else None
             for name, clips in (("commands", commands), ("nonspeech", nonspeech), ("calibration", calibration), ("calibration_nonspeech", calibration_nonspeech))}
    probe = NoSpeechProbe.fit(stats["commands"], stats["nonspeech"])
    shift = probe.calibrate(stats["calibration"], max_false_rejection, threshold)
    with torch.no_grad():
        rejected = int((probe.probability(stats["calibration"]) > threshold).sum())
        report = {
            "commands": len(commands), "nonspeech": len(nonspeech), "calibration_commands": len(calibration), "threshold": threshold,
            "max_false_rejection": max_false_rejection, "bias_shift": round(shift, 4),
            "calibration_false_rejections": rejected, "calibration_false_rejection": round(rejected / len(calibration), 4),
        }
        if stats["calibration_nonspeech"] is not None:
            caught = int((probe.probability(stats["calibration_nonspeech"]) > threshold).sum())
            report |= {"calibration_nonspeech": len(calibration_nonspeech), "nonspeech_rejected": round(caught / len(calibration_nonspeech), 4)}
    return probe, report
