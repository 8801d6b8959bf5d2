"""Deterministic train / nas_val / test splits keyed by slurp_id.

A slurp_id's split depends only on (seed, slurp_id) and the fractions, not on
which other ids are present: adding utterances never moves an existing one,
and every synthesized rendering of one sentence lands in the same split.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "nas_val", "test")
DEFAULT_FRACTIONS = {"train": 0.8, "nas_val": 0.1, "test": 0.1}


def split_of(slurp_id: int, seed: int = 0, fractions: dict[str, float] | None = None) -> str:
    fractions = fractions or DEFAULT_FRACTIONS
    unknown = set(fractions) - set(SPLITS)
    if unknown or abs(sum(fractions.values()) - 1.0) > 1e-6 or min(fractions.values()) < 0:
        raise ValueError(f"split fractions must be non-negative over {SPLITS} and sum to 1, got {fractions}")
    digest = hashlib.sha256(f"{seed}:{slurp_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    edge = 0.0
    for name in SPLITS:
        edge += fractions.get(name, 0.0)
        if u < edge:
            return name
    return SPLITS[-1]
