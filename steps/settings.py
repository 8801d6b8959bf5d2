"""Typed run settings: the blocks of parameters that several pipeline configs share.

A pipeline takes them as pydantic models, so ZenML validates a run config before any step runs, and a
misspelled key is refused with its name (``target.limt: Extra inputs are not permitted``) in the
pydantic error that ZenML's ``ValueError`` is raised from. Steps keep taking plain dicts (``.step_dict()``), so their cache keys are the config's own keys.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Dict, Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict, create_model, model_validator

from components.adapters import config_class
from components.training.loop import TrainConfig


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def step_dict(self) -> dict:
        """The keys the config set, as a plain dict for a step's parameter."""
        return self.model_dump(exclude_unset=True)


class TargetCorpus(Settings):
    """The target corpus a pipeline adapts to, and the backbone it adapts (baseline, nas, arte, multitask, retraining)."""

    slurp_jsonl: str  # SLURP-format labelled text (e.g. ../shared/data/slurp/devel.jsonl)
    corpus_name: str = "target"  # data/<corpus_name>/
    voices: str = "target"  # speaker presets or engine:voice[:pitch[:rate]] items
    snrs: Tuple[float, ...] = (0.0, 5.0, 10.0, 20.0)
    limit: Optional[int] = None  # first N sentences
    seed: int = 0
    data_root: str = "."
    backbone_version: str = "latest"  # the cascadapt_backbones version to adapt


def _train_settings() -> type[Settings]:
    """TrainConfig's fields as a pydantic model: one source of truth, unknown keys refused."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {}
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields[f.name] = (hints[f.name], default)
    return create_model("TrainSettings", __base__=Settings, __doc__="components.training.loop.TrainConfig, validated.", **fields)


TrainSettings = _train_settings()
NewTaskVariant = Literal["head", "mhr_z", "mhr_mu"]
BridgeInput = Literal["residual", "layer_norm"]  # components.models.cascade.BRIDGE_INPUTS that a new cascade may take


class MethodSpec(Settings):
    """One system of a multi-task run: an adapter (its config dict, with ``method``), or ``full: true``."""

    adapter: Optional[dict] = None
    full: bool = False  # full fine-tuning of the ASR, one copy a task
    train: Optional[TrainSettings] = None  # replaces the run's train_config for this system
    new_task: Tuple[NewTaskVariant, ...] = ()  # how the held-out task joins afterwards (methods with shared parameters)

    @model_validator(mode="after")
    def _one_kind(self) -> "MethodSpec":
        if self.full == (self.adapter is not None):
            raise ValueError("give exactly one of 'adapter: {method: ..., ...}' or 'full: true'")
        if self.adapter is not None:
            try:
                config_class(self.adapter.get("method", "")).from_dict(self.adapter).validate()
            except KeyError as e:  # an unknown method: KeyError's text is its first argument
                raise ValueError(f"adapter: {e.args[0]}") from None
        if self.full and self.new_task:
            raise ValueError("new_task variants need an adapter; full fine-tuning trains the new task with the others")
        return self


Methods = Dict[str, MethodSpec]


class AsrOptions(BaseModel):
    """The ASR's run-time options while a pipeline trains and scores adapters (ASRBackbone.configure), e.g.
    Whisper's {pad_to: longest, margin_seconds: 1.0}. A name no registered backbone takes is refused here;
    the backbone checks the values."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="after")
    def _known_names(self) -> "AsrOptions":
        from components.models.backbone import registered_backbones

        known = {name for cls in registered_backbones().values() for name in cls.runtime_options}
        unknown = sorted(set(self.model_extra or {}) - known)
        if unknown:
            raise ValueError(f"no ASR backbone has the run-time option(s) {unknown}; known: {sorted(known)}")
        return self
