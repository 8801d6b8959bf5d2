from typing import Annotated, Tuple

import pandas as pd
from zenml import log_metadata, step


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
