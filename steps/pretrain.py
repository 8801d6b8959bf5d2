"""Pre-training of the cascade's modules on the source domain, one step a module.

Each step trains one module of the cascade it is given and passes the cascade
on, so the dashboard shows cascade_init -> +SE -> +ASR -> +NLU -> +bridge.
Checkpoints go to <checkpoint_dir>/<module>/<input artifact id>: a killed run,
started again, resumes exactly (the steps before it come from the cache).
"""

from pathlib import Path
from typing import Annotated, Callable, Optional, Tuple

import pandas as pd
import torch
from zenml import ArtifactConfig, get_step_context, log_metadata, step
from zenml.enums import ArtifactType
from zenml.types import HTMLString

from components.data.dataset import SpeechDataset
from components.data.slurp import read_slurp
from components.data.splits import split_of
from components.models.asr import ASRConfig, ConformerCTC
from components.models.cascade import Cascade
from components.models.nlu import NluLabels, build_nlu
from components.models.se import MaskEnhancer, SEConfig
from components.training import recipes
from components.training.curves import curves_html
from components.training.loop import TrainConfig, TrainResult
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer for Cascade)


def checkpoint_folder(checkpoint_dir: Optional[str], module: str) -> Optional[str]:
    """<checkpoint_dir>/<module>/<input cascade artifact id>: a re-run of the same step on the same
    input resumes; another input (other backbone, other config upstream) never picks it up."""
    if not checkpoint_dir:
        return None
    source = get_step_context().inputs["cascade"][0].id
    return str(Path(checkpoint_dir) / module / str(source)[:13])


def _config(train_config: dict, checkpoint_dir: Optional[str], module: str) -> TrainConfig:
    return TrainConfig(**{**train_config, "checkpoint_dir": checkpoint_folder(checkpoint_dir, module)})


def _train(module: str, run: Callable[[Callable[[dict], None]], TrainResult]) -> HTMLString:
    """Run a recipe, log its epoch metrics to ZenML, and return its curves."""

    def on_metrics(record: dict) -> None:
        if "train_loss" in record:  # epoch records only; step records are too many
            print(f"[{module}] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)

    result = run(on_metrics)
    log_metadata({f"{module}_epochs": len(result.history), f"{module}_best_epoch": result.best_epoch or 0, f"{module}_best_val": result.best_metric or 0.0, f"{module}_steps": result.steps})
    return HTMLString(curves_html({module: result.history}, f"{module} pre-training"))


def _speech(train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str) -> tuple[SpeechDataset, SpeechDataset]:
    root = Path(manifest_path).parent
    return SpeechDataset(train, root), SpeechDataset(nas_val, root)


@step
def init_cascade(asr: dict, se: dict, use_se: bool = True, seed: int = 0) -> Annotated[Cascade, "cascade_init"]:
    """A fresh cascade: random SE and ASR, the pre-trained MiniLM with fresh heads over SLURP's labels."""
    torch.manual_seed(seed)
    labels = NluLabels.from_label_set()
    return Cascade(MaskEnhancer(SEConfig(**se)) if use_se else None, ConformerCTC(ASRConfig(**asr)), build_nlu(labels), labels)


@step
def pretrain_se(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str, train_config: dict, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, "cascade_se"], Annotated[HTMLString, "se_curves"]]:
    if cascade.se is None:
        return cascade, HTMLString("<p>no SE in this cascade</p>")
    tr, va = _speech(train, nas_val, manifest_path)
    curves = _train("se", lambda cb: recipes.train_se(cascade.se, tr, va, _config(train_config, checkpoint_dir, "se"), cb))
    return cascade, curves


@step
def pretrain_asr(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str, train_config: dict, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, "cascade_asr"], Annotated[HTMLString, "asr_curves"]]:
    tr, va = _speech(train, nas_val, manifest_path)
    curves = _train("asr", lambda cb: recipes.train_asr(cascade.asr, tr, va, _config(train_config, checkpoint_dir, "asr"), cb))
    return cascade, curves


@step
def pretrain_nlu(
    cascade: Cascade, slurp_jsonl: str, train_config: dict, split_seed: int = 0, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, "cascade_nlu"], Annotated[HTMLString, "nlu_curves"]]:
    """Gold SLURP text of the train split (never the test split), validated on nas_val."""
    records = read_slurp(slurp_jsonl)
    train = [r for r in records if split_of(r.slurp_id, split_seed) == "train"]
    val = [r for r in records if split_of(r.slurp_id, split_seed) == "nas_val"]
    curves = _train("nlu", lambda cb: recipes.train_nlu(cascade.nlu, cascade.labels, train, val, _config(train_config, checkpoint_dir, "nlu"), cb))
    return cascade, curves


@step
def pretrain_bridge(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str, train_config: dict, checkpoint_dir: Optional[str] = None
) -> Tuple[Annotated[Cascade, ArtifactConfig(name="pretrained_cascade", artifact_type=ArtifactType.MODEL)], Annotated[HTMLString, "bridge_curves"]]:
    """ASR states -> MiniLM input embeddings, from transcripts alone; the finished backbones."""
    tr, va = _speech(train, nas_val, manifest_path)
    curves = _train("bridge", lambda cb: recipes.train_bridge(cascade, tr, va, _config(train_config, checkpoint_dir, "bridge"), cb))
    return cascade, curves
