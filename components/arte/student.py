"""The cascade as ARTE's student: a short update on a spoken candidate batch, and its loss on each
preference item.

    student = CascadeStudent(architecture, preference_ds, speech_cfg, audio_dir, TrainConfig(max_steps=2))
    history = tailor(teacher, cascade, student.update, student.item_losses, ArteConfig(...), generator)

update: the batch is synthesized (voice, noise, SNR as chosen) and the cascade's fixed architecture trains on
it as in stage 2 (chosen adapters and the bridge, the cascade loss). item_losses: the NLU loss of each
preference utterance, end to end through SE, ASR and the bridge (eval mode, no gradient).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import DataLoader, Subset

from components.arte.speech import speak
from components.arte.teacher import Example
from components.data.corpus import CorpusConfig
from components.data.dataset import SpeechDataset, collate
from components.models.cascade import Cascade
from components.models.nlu import nlu_loss
from components.training.loop import TrainConfig, resolve_device
from components.nas.recipes import train_cascade_architecture


@torch.no_grad()
def nlu_item_losses(cascade: Cascade, ds, batch_size: int = 16, device: str = "auto") -> torch.Tensor:
    """(len(ds),) NLU loss of each utterance, on cpu."""
    dev = resolve_device(device)
    cascade = cascade.to(dev).eval()
    losses = []
    for b in DataLoader(ds, batch_size=batch_size, collate_fn=collate):
        out = cascade(b["noisy"].to(dev), b["lengths"].to(dev))
        nlu = out["nlu"]
        targets = cascade.nlu_targets(out["words"], b["meta"], nlu["tag_logits"].shape[1])
        losses.append(nlu_loss(nlu, {**targets, "word_mask": nlu["word_mask"]}, reduction="none").float().cpu())
    return torch.cat(losses)


class CascadeStudent:
    def __init__(self, architecture: dict[str, str], preference: SpeechDataset, speech: CorpusConfig, audio_dir: str | Path, update: TrainConfig) -> None:
        self.architecture, self.preference, self.speech, self.audio_dir, self.update_cfg = architecture, preference, speech, Path(audio_dir), update

    def update(self, cascade: Cascade, examples: Sequence[Example]) -> None:
        manifest = speak(examples, self.audio_dir, self.speech)
        train_cascade_architecture(cascade, self.architecture, SpeechDataset(manifest, self.audio_dir), None, self.update_cfg)

    def item_losses(self, cascade: Cascade, items: torch.Tensor | None) -> torch.Tensor:
        ds = self.preference if items is None else Subset(self.preference, items.tolist())
        return nlu_item_losses(cascade, ds, self.update_cfg.batch_size, self.update_cfg.device)
