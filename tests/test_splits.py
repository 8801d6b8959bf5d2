import pytest

from components.data.slurp import read_slurp
from components.data.splits import split_of


def test_splits_are_stable_disjoint_and_near_the_fractions(slurp_jsonl):
    ids = [r.slurp_id for r in read_slurp(slurp_jsonl)]
    first = {i: split_of(i) for i in ids}
    # stable: the same id gets the same split, whatever else is in the set
    assert {i: split_of(i) for i in reversed(ids[: len(ids) // 2])} == {i: first[i] for i in ids[: len(ids) // 2]}
    counts = {s: sum(v == s for v in first.values()) for s in ("train", "nas_val", "test")}
    n = len(ids)
    assert abs(counts["train"] / n - 0.8) < 0.06 and counts["nas_val"] > 0 and counts["test"] > 0
    # another seed moves ids around
    assert sum(split_of(i, seed=1) != first[i] for i in ids) > n // 10


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="sum to 1"):
        split_of(1, fractions={"train": 0.9, "test": 0.2})
