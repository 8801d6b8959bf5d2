from pathlib import Path
from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import ArtifactConfig, step
from zenml.enums import ArtifactType
from zenml.types import HTMLString

from components.data.dataset import SpeechDataset
from components.models.cascade import Cascade
from components.training import recipes
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer for Cascade)
from steps.training import make_train_config, train_and_log


@step
def finetune_full(
    cascade: Cascade,
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    manifest_path: str,
    train_config: dict,
    loss_weights: Optional[dict] = None,
    checkpoint_dir: Optional[str] = None,
) -> Tuple[Annotated[Cascade, ArtifactConfig(name="finetuned_cascade", artifact_type=ArtifactType.MODEL)], Annotated[HTMLString, "finetune_curves"]]:
    """Full fine-tuning of every module on the target domain (the baseline adapters must match)."""
    root = Path(manifest_path).parent
    cfg = make_train_config(train_config, checkpoint_dir, "full", loss_weights=loss_weights)
    curves = train_and_log("full", lambda cb: recipes.finetune_cascade(cascade, SpeechDataset(train, root), SpeechDataset(nas_val, root), cfg, cb, weights=loss_weights))
    return cascade, curves


@step
def train_nlu_on_1best(
    cascade: Cascade,
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    manifest_path: str,
    train_config: dict,
    checkpoint_dir: Optional[str] = None,
) -> Tuple[Annotated[Cascade, ArtifactConfig(name="nlu_on_1best_cascade", artifact_type=ArtifactType.MODEL)], Annotated[HTMLString, "nlu_on_1best_curves"]]:
    """The frozen SE and ASR; the NLU retrained on their 1-best text of the target train split (text mode)."""
    root = Path(manifest_path).parent
    cfg = make_train_config(train_config, checkpoint_dir, "nlu_on_1best")
    curves = train_and_log("nlu_on_1best", lambda cb: recipes.train_nlu_on_transcripts(cascade, SpeechDataset(train, root), SpeechDataset(nas_val, root), cfg, cb))
    return cascade, curves
