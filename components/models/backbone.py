"""The ASR backbone interface: all the cascade, training, the search, ARTE and serving know of a recogniser.

    targets, target_lengths = asr.encode_targets(texts)          # (B, S) long, (B,): the training targets
    out = asr(wave, lengths, targets, target_lengths)            # targets optional (needed for the loss)
    out = asr(wave, lengths, ..., front=(level, x))              # starting from a front level (front_levels)
      out["states"]   (B, S', d)   hidden states the cascade's bridge reads; d = asr.hidden_size
      out["lengths"]  (B,)         valid states per row
      out["words"]    B lists of (word, start, end): the 1-best words, each over states [start, end)
      out["texts"]    B strings: the 1-best as the model writes it (Whisper: cased, punctuated)
      out["speech"]   optional, B bools: False where the recogniser heard nobody (its words are then empty)
      ... and what the backbone's own loss reads (CTC logits, teacher-forced token logits)
    loss = asr.loss(out, targets, target_lengths)                # scalar: the ASR training loss
    asr.config                                                   # a dataclass with ``kind``
    asr.max_seconds                                              # the longest clip it takes (None: any)

A backbone that can tell that nobody spoke has ``no_speech_threshold`` among its ``runtime_options``, sets
``out["speech"]`` and ``out["no_speech_prob"]``, and takes ``forward(..., no_speech=B floats)``: a probability
decided before it (the cascade's no-speech probe on the raw input) in place of its own.

Everything that needs parameters runs in ``forward`` (a NAS choice cell or DDP wraps the module and only
sees forward calls); ``loss`` and ``encode_targets`` only read their arguments. ``forward(..., words=False)``
skips the 1-best (the loss alone).

A run config names a backbone as ``{"kind": ..., **params}`` (``build_backbone``); ``create`` makes it.
Saving: ``asr.save_files(directory)`` writes the side files it needs (a tokenizer) and returns its config
as a dict; ``backbone_from_saved(config, directory)`` rebuilds the architecture (the caller loads the
weights). A new backbone is one module with a class decorated by ``register_backbone``, listed in
BACKBONE_MODULES so that saved files of its kind can be loaded.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import nn

BACKBONES: dict[str, type["ASRBackbone"]] = {}
BACKBONE_MODULES = ("components.models.asr", "components.models.whisper.model")
_KIND = re.compile(r"^[a-z][a-z0-9_]*$")


class ASRBackbone(nn.Module):
    kind: ClassVar[str]
    config_cls: ClassVar[type]

    config: object  # an instance of config_cls
    # config fields that change how the backbone runs, not its weights; ``configure`` sets them (Whisper: its padding)
    runtime_options: ClassVar[tuple[str, ...]] = ()

    def configure(self, **options) -> None:
        """Set run-time options (``runtime_options``) on the config; the config's own checks run again."""
        unknown = sorted(set(options) - set(self.runtime_options))
        if unknown:
            raise ValueError(f"{self.kind} backbone: no run-time option {unknown}; it has {list(self.runtime_options)}")
        self.config = dataclasses.replace(self.config, **options)

    def to_inference_engine(self) -> bool:
        """Swap in a leaner inference-only form of the same weights, if the kind has one and the model is
        still plain (adapters are added after); True if it now runs on one. Default: none."""
        return False

    def runtime_settings(self) -> dict:
        """The current value of every run-time option (what ``configure`` takes back)."""
        return {name: getattr(self.config, name) for name in self.runtime_options}

    @property
    def hidden_size(self) -> int:
        raise NotImplementedError

    @property
    def max_seconds(self) -> float | None:
        """The longest clip the backbone takes (Whisper: its encoder window); None: no limit."""
        return None

    @property
    def front_levels(self) -> tuple[tuple[str, str | None], ...]:
        """The first stages of ``forward`` that are a pure function of one clip, in order: (level, the path of
        the sub-module whose parameters it reads, or None). ``front(wave, lengths, level)`` computes a level
        and ``forward(..., front=(level, x))`` starts from it. Empty: nothing to reuse (the default)."""
        return ()

    def front(self, wave: torch.Tensor, lengths: torch.Tensor, level: str) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no front level {level!r}")

    def encode_targets(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, out: dict, targets: torch.Tensor, target_lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def save_files(self, directory: Path) -> dict:
        """Write side files into ``directory``; return the config to store (with its kind)."""
        return {"kind": self.kind, **dataclasses.asdict(self.config)}

    @classmethod
    def create(cls, **params) -> "ASRBackbone":
        """A new backbone from a run config's parameters (fresh weights, or pre-trained ones where the kind has them)."""
        return cls(cls.config_cls(**params))

    @classmethod
    def from_saved(cls, config: dict, directory: Path) -> "ASRBackbone":
        """The architecture of a saved backbone (weights are loaded by the caller)."""
        fields = {f.name for f in dataclasses.fields(cls.config_cls)}
        return cls(cls.config_cls(**{k: v for k, v in config.items() if k in fields}))


def register_backbone(cls: type) -> type:
    """Class decorator: add an ASRBackbone subclass under ``cls.kind``; refuses bad or duplicate entries."""
    if not (isinstance(cls, type) and issubclass(cls, ASRBackbone)):
        raise TypeError(f"{cls!r} is not an ASRBackbone subclass")
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ValueError(f"{cls.__name__}.kind must be a lower_snake_case name, got {kind!r}")
    if kind in BACKBONES and BACKBONES[kind] is not cls:
        raise ValueError(f"ASR backbone kind {kind!r} is already registered (by {BACKBONES[kind].__name__})")
    if not dataclasses.is_dataclass(getattr(cls, "config_cls", None)):
        raise TypeError(f"{cls.__name__}.config_cls must be a dataclass")
    BACKBONES[kind] = cls
    return cls


def registered_backbones() -> dict[str, type[ASRBackbone]]:
    """kind -> class, every module of BACKBONE_MODULES imported (each registers its backbone)."""
    for module in BACKBONE_MODULES:
        importlib.import_module(module)
    return BACKBONES


def backbone_class(kind: str) -> type[ASRBackbone]:
    registered_backbones()
    if kind not in BACKBONES:
        raise KeyError(f"no ASR backbone kind {kind!r}; registered: {sorted(BACKBONES)}")
    return BACKBONES[kind]


def build_backbone(params: dict) -> ASRBackbone:
    """``{"kind": ..., **its parameters}`` from a run config -> a backbone; no kind: a Conformer-CTC."""
    params = dict(params)
    return backbone_class(params.pop("kind", "conformer_ctc")).create(**params)


def backbone_from_saved(config: dict, directory: Path) -> ASRBackbone:
    """Rebuild a saved backbone; a config without ``kind`` is a Conformer-CTC (cascade format 1)."""
    config = dict(config)
    return backbone_class(config.pop("kind", "conformer_ctc")).from_saved(config, Path(directory))
