"""A real DVC repository with a real local remote: push, lose everything, pull back."""

import hashlib
import shutil
import subprocess

from components.data import versioning
from components.data.corpus import CorpusConfig, build_corpus
from components.data.slurp import read_slurp
from components.data.speakers import Speaker


def _tree(root):
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_dvc_push_pull_round_trip(slurp_jsonl, tmp_path):
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    versioning.dvc(repo, "init", "-q")
    versioning.dvc(repo, "remote", "add", "-d", "local", str(remote))
    build_corpus(read_slurp(slurp_jsonl)[:4], repo / "data" / "tiny", CorpusConfig([Speaker("flite", "slt")], workers=1), progress=False)
    before = _tree(repo / "data")

    assert versioning.tracked_md5(repo / "data.dvc") is None
    md5 = versioning.add(repo, "data")
    assert md5.endswith(".dir") and versioning.tracked_md5(repo / "data.dvc") == md5
    assert versioning.workspace_matches(repo, "data")
    versioning.push(repo, "data")
    assert any(remote.rglob("*"))

    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    assert not versioning.workspace_matches(repo, "data")
    assert versioning.pull(repo, "data")
    assert _tree(repo / "data") == before

    # a remote that lacks the version: pull says so instead of raising
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(remote)
    assert versioning.pull(repo, "data") is False
