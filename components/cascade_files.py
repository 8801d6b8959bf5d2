"""A trained cascade on disk: cascade.json + cascade.safetensors (+ the ASR backbone's side files).

    cascade.json   {"format": "cascadapt-cascade/3", "se": SEConfig | null,
                    "asr": {"kind": "whisper" | "conformer_ctc", ...its config}, "bridge_input": "layer_norm" | "raw",
                    "labels": NluLabels, "cells": NAS cells to rebuild before loading (optional),
                    "no_speech_probe": {"n_mels": 80} (optional: the cascade's no-speech probe, its weights in the safetensors)}
    cascade.safetensors   every weight (tensors shared under several names stored once)
    asr_tokenizer.json    Whisper's tokenizer (Whisper backbones only)

Format 1 (before the backbone interface) has an "asr" without "kind": a Conformer-CTC; it still loads.
Formats 1 and 2 have no "bridge_input": their bridges read the raw pooled states.
This module sits above components.models and components.nas because a saved search architecture
needs both. No pickle is ever read.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from components.models.backbone import backbone_from_saved
from components.models.cascade import Cascade
from components.models.nlu import NluLabels, build_nlu, load_state_dict_file, save_state_dict
from components.models.no_speech_probe import NoSpeechProbe
from components.models.se import MaskEnhancer, SEConfig
from components.nas.cascade import cells_config, restore_cells

FORMAT = "cascadapt-cascade/3"
READABLE = ("cascadapt-cascade/1", "cascadapt-cascade/2", FORMAT)
CONFIG_FILE, WEIGHTS_FILE = "cascade.json", "cascade.safetensors"


def save_cascade(model: Cascade, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "format": FORMAT,
        "se": asdict(model.se.cfg) if model.se is not None else None,
        "asr": model.asr.save_files(directory),
        "labels": model.labels.to_dict(),
        "bridge_input": model.bridge_input,
        "bridge_dropout": model.bridge_dropout,
    }
    cells = cells_config(model)
    if cells is not None:
        config["cells"] = cells  # architecture-search cells (adapters, fine-tune deltas) to rebuild before loading
    if model.no_speech_probe is not None:
        config["no_speech_probe"] = {"n_mels": model.no_speech_probe.n_mels}
    save_state_dict(model, directory / WEIGHTS_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    return directory


def is_saved_cascade(path: str | Path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_cascade(directory: str | Path, device: str | torch.device = "cpu") -> Cascade:
    """Rebuild from cascade.json (the shipped MiniLM config, the recorded backbone) and load weights with safetensors."""
    directory = Path(directory)
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved cascade (no {CONFIG_FILE})")
    config = json.loads(config_path.read_text())
    if config.get("format") not in READABLE:
        raise ValueError(f"{config_path}: format {config.get('format')!r}; this version reads {', '.join(READABLE)}")
    labels = NluLabels.from_dict(config["labels"])
    se = MaskEnhancer(SEConfig(**config["se"])) if config["se"] else None
    model = Cascade(se, backbone_from_saved(config["asr"], directory), build_nlu(labels, pretrained=False), labels, bridge_input=config.get("bridge_input", "raw"), bridge_dropout=config.get("bridge_dropout", 0.0))
    if config.get("cells"):
        restore_cells(model, config["cells"])
    if config.get("no_speech_probe"):
        model.set_no_speech_probe(NoSpeechProbe(**config["no_speech_probe"]))
    load_state_dict_file(model, directory / WEIGHTS_FILE, device=device)
    return model.to(device).eval()
