from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import log_metadata, step
from zenml.types import HTMLString

COLUMNS = ["system", "mode", "wer", "cer", "scenario_acc", "action_acc", "intent_acc", "entity_f1", "slu_f1", "nlu_cer", "trainable_parameters", "total_parameters", "n"]


@step
def results_table(
    frozen: dict,
    frozen_text: dict,
    full: dict,
    full_text: dict,
    pocketsphinx: Optional[dict] = None,
    full_beam: Optional[dict] = None,
) -> Tuple[Annotated[pd.DataFrame, "results"], Annotated[HTMLString, "results_table"]]:
    """One row a system, rates x100 in the HTML view; the frame keeps fractions."""
    rows = [r for r in (frozen, frozen_text, full, full_text, full_beam, pocketsphinx) if r]
    df = pd.DataFrame(rows).reindex(columns=COLUMNS)
    shown = df.copy()
    for col in ("wer", "cer", "scenario_acc", "action_acc", "intent_acc", "entity_f1", "slu_f1", "nlu_cer"):
        shown[col] = (shown[col] * 100).round(2)
    log_metadata({f"{r['system']}/{r['mode']}": {k: r[k] for k in ("wer", "intent_acc", "slu_f1") if k in r} for r in rows})
    caption = "<p>Target-domain test split. wer, cer, accuracies, F1 and nlu_cer in %.</p>"
    return df, HTMLString(f"<html><body><h2>Cascade baselines</h2>{caption}{shown.to_html(index=False)}</body></html>")
