from pathlib import Path
from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import ArtifactConfig, log_metadata, step
from zenml.enums import ArtifactType
from zenml.types import HTMLString

from components.data.dataset import SpeechDataset
from components.models.cascade import Cascade
from components.training import recipes
from components.training.curves import curves_html
from components.training.loop import TrainConfig
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer for Cascade)
from steps.pretrain import checkpoint_folder


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
    cfg = TrainConfig(**{**train_config, "checkpoint_dir": checkpoint_folder(checkpoint_dir, "full")})
    result = recipes.finetune_cascade(cascade, SpeechDataset(train, root), SpeechDataset(nas_val, root), cfg, weights=loss_weights)
    log_metadata({"epochs": len(result.history), "best_epoch": result.best_epoch or 0, "best_val_loss": result.best_metric or 0.0})
    return cascade, HTMLString(curves_html({"full fine-tuning": result.history}, "full fine-tuning on the target domain"))
