import os
import shutil
import tempfile
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


# BentoML's model and bento stores: a temporary home for the whole session (servers started by tests
# inherit it), never the user's ~/bentoml. Set before anything imports bentoml.
BENTOML_HOME = Path(tempfile.mkdtemp(prefix="cascadapt-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(BENTOML_HOME)


def pytest_unconfigure(config):
    shutil.rmtree(BENTOML_HOME, ignore_errors=True)
