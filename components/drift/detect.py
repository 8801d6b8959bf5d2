"""Compare a new batch's utterance features with the reference's, with Evidently 0.7's data drift preset.

    result, html = detect_drift(reference_table, new_table)
    result["drifted"], result["columns"]["snr_est_db"]   # -> True, {"method", "score", "threshold", "drifted"}

Evidently picks each numeric column's test by sample size (K-S p-value on small samples, Wasserstein
distance on large ones); the intent mix gets a TVD permutation test. A column drifts when Evidently's
test for it fails; the batch drifts when at least ``drift_share`` of the columns do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from components.drift.features import CATEGORICAL, NUMERIC


def detect_drift(reference: pd.DataFrame, current: pd.DataFrame, drift_share: float = 0.5, seed: int = 0) -> tuple[dict, str]:
    """-> ({drifted, drift_share, drifted_columns, columns: {name: {method, score, threshold, drifted}}}, report HTML)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    numeric = [c for c in NUMERIC if c in reference.columns and c in current.columns]
    categorical = [c for c in CATEGORICAL if c in reference.columns and c in current.columns]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    columns = numeric + categorical
    # TVD (a permutation test) for the intent mix: chi-square calls an intent the reference lacks infinitely
    # unlikely, so two samples of the same distribution "drift" at a few hundred utterances
    report = Report([DataDriftPreset(drift_share=drift_share, cat_method="TVD")], include_tests=True)
    rng_state = np.random.get_state()
    np.random.seed(seed)  # the permutation test draws from numpy's global RNG
    try:
        snapshot = report.run(Dataset.from_pandas(current[columns], data_definition=definition), Dataset.from_pandas(reference[columns], data_definition=definition))
    finally:
        np.random.set_state(rng_state)
    result = snapshot.dict()
    verdicts = {t["metric_config"]["params"]["column"]: t["status"] == "FAIL" for t in result["tests"] if t["metric_config"]["params"].get("column")}
    found = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            column = config["column"]
            found[column] = {"method": config["method"], "score": float(metric["value"]), "threshold": float(config["threshold"]), "drifted": verdicts[column]}
    share = sum(c["drifted"] for c in found.values()) / max(len(found), 1)
    result = {
        "drifted": share >= drift_share,
        "drift_share": share,
        "drift_share_threshold": drift_share,
        "drifted_columns": sorted(name for name, c in found.items() if c["drifted"]),
        "columns": found,
        "reference_rows": len(reference),
        "current_rows": len(current),
    }
    if "confidence" in reference.columns and "confidence" in current.columns:  # the model's own view of the batch
        result["confidence"] = {"reference_mean": float(reference["confidence"].mean()), "current_mean": float(current["confidence"].mean())}
    return result, snapshot.get_html_str(as_iframe=False)
