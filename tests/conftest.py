import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "components/data/sample/slurp_devel_sample.jsonl"
SHARED_DEVEL = REPO.parent / "shared/data/slurp/devel.jsonl"

os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def slurp_jsonl() -> Path:
    """The real SLURP devel annotations when ../shared has them, else the shipped sample."""
    return SHARED_DEVEL if SHARED_DEVEL.is_file() else SAMPLE
