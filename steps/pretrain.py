"""Pre-training of the cascade's modules on the source domain, one step a module.

Each step trains one module of the cascade it is given and passes the cascade
on, so the dashboard shows cascade_init -> +SE -> +ASR -> +ASR on enhanced noisy audio -> +NLU -> +bridge.
Checkpoints go to <checkpoint_dir>/<module>/<hash of the input weights>: a killed run,
started again, resumes exactly (the steps before it come from the cache).
"""

from pathlib import Path
from typing import Annotated, Optional, Tuple

import pandas as pd
import torch
from zenml import ArtifactConfig, step
from zenml.enums import ArtifactType
from zenml.types import HTMLString

from components.data.dataset import SpeechDataset
from components.data.slurp import read_slurp
from components.data.splits import split_of
from components.models.backbone import build_backbone
from components.models.cascade import Cascade
from components.models.nlu import NluLabels, build_nlu
from components.models.se import MaskEnhancer, SEConfig
from components.training import recipes
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer for Cascade)
from steps.training import make_train_config, train_and_log


def _speech(train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str) -> tuple[SpeechDataset, SpeechDataset]:
    root = Path(manifest_path).parent
    return SpeechDataset(train, root), SpeechDataset(nas_val, root)


@step
def init_cascade(asr: dict, se: dict, use_se: bool = True, seed: int = 0, bridge_input: str = "residual") -> Annotated[Cascade, "cascade_init"]:
    """A fresh cascade: random SE, the ASR backbone ``asr`` names ({"kind": "whisper", "source": ...} loads
    pre-trained Whisper; {"kind": "conformer_ctc", ...sizes} is a fresh Conformer-CTC), the pre-trained
    MiniLM with fresh heads over SLURP's labels."""
    torch.manual_seed(seed)
    labels = NluLabels.from_label_set()
    return Cascade(MaskEnhancer(SEConfig(**se)) if use_se else None, build_backbone(asr), build_nlu(labels), labels, bridge_input=bridge_input)


@step
def pretrain_se(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str, train_config: dict, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, "cascade_se"], Annotated[HTMLString, "se_curves"]]:
    if cascade.se is None:
        return cascade, HTMLString("<p>no SE in this cascade</p>")
    tr, va = _speech(train, nas_val, manifest_path)
    curves = train_and_log("se", lambda cb: recipes.train_se(cascade.se, tr, va, make_train_config(train_config, checkpoint_dir, "se"), cb))
    return cascade, curves


@step
def pretrain_asr(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str, train_config: dict, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, "cascade_asr"], Annotated[HTMLString, "asr_curves"]]:
    tr, va = _speech(train, nas_val, manifest_path)
    curves = train_and_log("asr", lambda cb: recipes.train_asr(cascade.asr, tr, va, make_train_config(train_config, checkpoint_dir, "asr"), cb))
    return cascade, curves


@step
def pretrain_asr_enhanced(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str, train_config: Optional[dict] = None, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, "cascade_asr_enhanced"], Annotated[HTMLString, "asr_enhanced_curves"]]:
    """The ASR continues on SE-enhanced noisy audio (multi-condition); skipped without a train_config."""
    if train_config is None:
        return cascade, HTMLString("<p>no multi-condition stage in this config</p>")
    tr, va = _speech(train, nas_val, manifest_path)
    curves = train_and_log("asr_enhanced", lambda cb: recipes.train_asr_enhanced(cascade, tr, va, make_train_config(train_config, checkpoint_dir, "asr_enhanced"), cb))
    return cascade, curves


@step
def pretrain_nlu(
    cascade: Cascade, slurp_jsonl: str, train_config: dict, split_seed: int = 0, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, "cascade_nlu"], Annotated[HTMLString, "nlu_curves"]]:
    """Gold SLURP text of the train split (never the test split), validated on nas_val."""
    records = read_slurp(slurp_jsonl)
    train = [r for r in records if split_of(r.slurp_id, split_seed) == "train"]
    val = [r for r in records if split_of(r.slurp_id, split_seed) == "nas_val"]
    curves = train_and_log("nlu", lambda cb: recipes.train_nlu(cascade.nlu, cascade.labels, train, val, make_train_config(train_config, checkpoint_dir, "nlu"), cb))
    return cascade, curves


@step
def pretrain_bridge(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str, train_config: Optional[dict] = None, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, ArtifactConfig(name="pretrained_cascade", artifact_type=ArtifactType.MODEL)], Annotated[HTMLString, "bridge_curves"]]:
    """ASR states -> MiniLM input embeddings, from transcripts alone; the finished backbones. The residual
    bridge (the default) starts at zero, as the text mode, and learns from the NLU loss on the target domain."""
    if cascade.bridge_input == "residual":
        return cascade, HTMLString("<p>residual bridge: starts at zero (e2e = the text mode on the greedy 1-best); nothing to pre-train</p>")
    tr, va = _speech(train, nas_val, manifest_path)
    curves = train_and_log("bridge", lambda cb: recipes.train_bridge(cascade, tr, va, make_train_config(train_config, checkpoint_dir, "bridge"), cb))
    return cascade, curves
