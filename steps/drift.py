from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import log_metadata, step
from zenml.types import HTMLString

from components.drift import detect_drift, read_batch, retraining_decision, utterance_features
from components.models.cascade import Cascade


@step(enable_cache=False)  # it reads audio files, which a cache key on their paths cannot see
def detect_data_drift(
    new_batch: str,
    reference_manifest: str,
    cascade: Optional[Cascade] = None,
    reference_split: Optional[str] = "train",
    max_reference: int = 500,
    drift_share: float = 0.3,
    seed: int = 0,
) -> Tuple[Annotated[dict, "drift"], Annotated[HTMLString, "drift_report"], Annotated[pd.DataFrame, "drift_features"]]:
    """Evidently's drift report of a new batch's utterance features against the reference corpus
    (its ``reference_split`` rows, at most ``max_reference`` drawn with ``seed``); with ``cascade`` the text
    features come from its predictions. A malformed batch fails here with the file, row and field."""
    batch = read_batch(new_batch)
    reference = read_batch(reference_manifest)
    if reference_split is not None and "split" in reference.columns:
        reference = reference[reference["split"] == reference_split]
    reference = reference.sample(min(max_reference, len(reference)), random_state=seed)
    current = utterance_features(batch, new_batch, cascade)
    result, html = detect_drift(utterance_features(reference, reference_manifest, cascade), current, drift_share=drift_share, seed=seed)
    log_metadata({"drift": {k: result[k] for k in ("drifted", "drift_share", "drifted_columns", "current_rows", "reference_rows")}})
    return result, HTMLString(html), current


@step(enable_cache=False)
def decide_retraining(drift: dict, max_confidence_drop: float = 0.05, force: bool = False) -> Annotated[dict, "retraining_decision"]:
    """Retrain on data drift or a drop in the model's confidence on the new batch; the reasons go to the run's metadata."""
    decision = retraining_decision(drift, max_confidence_drop, force)
    log_metadata({"retraining": decision})
    return decision
