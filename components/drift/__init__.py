"""Data drift between a reference and a new batch of utterances: per-utterance features (features.py)
compared with Evidently (detect.py). Plain Python; the ZenML step is steps/drift.py."""

from components.drift.decide import retraining_decision
from components.drift.detect import detect_drift
from components.drift.features import FEATURES, DriftInputError, audio_features, read_batch, utterance_features

__all__ = ["FEATURES", "DriftInputError", "audio_features", "detect_drift", "read_batch", "retraining_decision", "utterance_features"]
