from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import log_metadata, step
from zenml.types import HTMLString

COLUMNS = ["system", "mode", "wer", "cer", "scenario_acc", "action_acc", "intent_acc", "entity_f1", "slu_f1", "nlu_cer", "trainable_parameters", "total_parameters", "rtf", "n"]
RATES = ("wer", "cer", "scenario_acc", "action_acc", "intent_acc", "entity_f1", "slu_f1", "nlu_cer")


def with_engine_columns(rows: list[dict]) -> pd.DataFrame:
    """One row a system; the per-engine WERs (wer_festival, ...) follow the overall WER."""
    engines = sorted({k for r in rows for k in r if k.startswith("wer_")})
    at = COLUMNS.index("wer") + 1
    return pd.DataFrame(rows).reindex(columns=COLUMNS[:at] + engines + COLUMNS[at:])


@step
def results_table(
    frozen: dict,
    frozen_text: dict,
    full: dict,
    full_text: dict,
    pocketsphinx: Optional[dict] = None,
    full_beam: Optional[dict] = None,
    nlu_on_1best: Optional[dict] = None,
) -> Tuple[Annotated[pd.DataFrame, "results"], Annotated[HTMLString, "results_table"]]:
    """One row a system, rates x100 in the HTML view; the frame keeps fractions."""
    rows = [r for r in (frozen, frozen_text, nlu_on_1best, full, full_text, full_beam, pocketsphinx) if r]
    df = with_engine_columns(rows)
    shown = df.copy()
    for col in [c for c in df.columns if c in RATES or c.startswith("wer_")]:
        shown[col] = (shown[col] * 100).round(2)
    log_metadata({f"{r['system']}/{r['mode']}": {k: r[k] for k in ("wer", "intent_acc", "slu_f1") if k in r} for r in rows})
    caption = "<p>Target-domain test split. wer (overall and per TTS engine), cer, accuracies, F1 and nlu_cer in %; rtf: seconds of processing per second of audio.</p>"
    return df, HTMLString(f"<html><body><h2>Cascade baselines</h2>{caption}{shown.to_html(index=False)}</body></html>")
