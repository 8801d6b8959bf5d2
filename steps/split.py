from typing import Annotated, Tuple

import pandas as pd
from zenml import log_metadata, step

from components.data.manifest import rows_within
from components.models.cascade import Cascade
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer for Cascade)


@step
def split_corpus(
    manifest: pd.DataFrame, validation_summary: dict
) -> Tuple[
    Annotated[pd.DataFrame, "train"],
    Annotated[pd.DataFrame, "nas_val"],
    Annotated[pd.DataFrame, "test"],
]:
    """train (weights), nas_val (architecture search), test; refuses a corpus that failed validation."""
    if not validation_summary["ok"]:
        shown = "\n".join(validation_summary["first_failures"])
        raise ValueError(f"corpus failed validation ({validation_summary['failures']} problems); first ones:\n{shown}")
    parts = {name: manifest[manifest["split"] == name].reset_index(drop=True) for name in ("train", "nas_val", "test")}
    log_metadata({name: len(df) for name, df in parts.items()})
    return parts["train"], parts["nas_val"], parts["test"]


@step
def fit_to_backbone(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, test: pd.DataFrame
) -> Tuple[
    Annotated[pd.DataFrame, "train"],
    Annotated[pd.DataFrame, "nas_val"],
    Annotated[pd.DataFrame, "test"],
]:
    """The rows the cascade's ASR can hear: a Whisper takes clips up to its encoder window, so longer ones
    are dropped from every split (counted in the metadata and printed); other backbones take all."""
    limit = cascade.asr.max_seconds
    fitted = {name: rows_within(df, limit) for name, df in (("train", train), ("nas_val", nas_val), ("test", test))}
    dropped = {name: n for name, (_, n) in fitted.items()}
    log_metadata({"max_seconds": limit or 0.0, "dropped_longer": dropped})
    if any(dropped.values()):
        print(f"fit_to_backbone: dropped clips longer than the ASR's {limit:g} s window: {dropped}", flush=True)
    return fitted["train"][0], fitted["nas_val"][0], fitted["test"][0]
