"""Whether to retrain: data drift, or the model less sure of the new batch than of the reference."""

from __future__ import annotations


def retraining_decision(drift: dict, max_confidence_drop: float = 0.05, force: bool = False) -> dict:
    """drift: detect_drift's result -> {retrain, reasons: [why, in words]}."""
    reasons = ["forced"] if force else []
    if drift["drifted"]:
        reasons.append(f"data drift in {', '.join(drift['drifted_columns'])} ({drift['drift_share']:.0%} of the features)")
    confidence = drift.get("confidence")
    if confidence and confidence["reference_mean"] - confidence["current_mean"] > max_confidence_drop:
        reasons.append(f"model confidence fell from {confidence['reference_mean']:.3f} to {confidence['current_mean']:.3f}")
    return {"retrain": bool(reasons), "reasons": reasons}
