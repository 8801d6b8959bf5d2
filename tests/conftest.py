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


@pytest.fixture(scope="session")
def two_speaker_speech(slurp_jsonl, tmp_path_factory):
    """Two speakers say the same 4 sentences in pink noise: two tasks of 4 utterances."""
    from components.data.corpus import CorpusConfig, build_corpus
    from components.data.dataset import SpeechDataset
    from components.data.manifest import read_manifest
    from components.data.slurp import read_slurp
    from components.data.speakers import Speaker
    from components.multitask import TASK, task_names

    out = tmp_path_factory.mktemp("multitask")
    records = [r for r in read_slurp(slurp_jsonl) if r.entities][:4]
    speakers = [Speaker("espeak-ng", "en-us"), Speaker("flite", "slt")]
    manifest = build_corpus(records, out, CorpusConfig(speakers, speakers_per_text=2, snrs=[10.0], noise_kinds=["pink"], workers=2), progress=False)
    df = read_manifest(manifest)
    df[TASK] = task_names(df, ["speaker"])
    return SpeechDataset(df, out)


# BentoML's model and bento stores: a temporary home for the whole session (servers started by tests
# inherit it), never the user's ~/bentoml. Set before anything imports bentoml.
BENTOML_HOME = Path(tempfile.mkdtemp(prefix="cascadapt-test-bentoml-"))
os.environ["BENTOML_HOME"] = str(BENTOML_HOME)


def pytest_unconfigure(config):
    shutil.rmtree(BENTOML_HOME, ignore_errors=True)
