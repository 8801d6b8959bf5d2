import hashlib

import pytest

from components.data.corpus import CorpusConfig, build_corpus, plan
from components.data.manifest import read_manifest
from components.data.slurp import read_slurp
from components.data.speakers import Speaker

SPEAKERS = [Speaker("flite", "slt"), Speaker("espeak-ng", "en-us"), Speaker("festival", "kal_diphone")]


def _digests(root):
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.flac"))}


@pytest.fixture(scope="module")
def records(slurp_jsonl):
    return read_slurp(slurp_jsonl)[:16]


def test_build_is_deterministic_resumable_and_complete(records, tmp_path):
    cfg = CorpusConfig(SPEAKERS, snrs=[0.0, 10.0], speakers_per_text=2, workers=2)
    a = build_corpus(records, tmp_path / "a", cfg, progress=False)
    df = read_manifest(a)
    assert len(df) == 32 and df["utt_id"].is_unique
    assert set(df["noise"]) <= {"white", "pink", "babble"} and set(df["snr"]) <= {0.0, 10.0}
    assert (df["snr_measured"] - df["snr"]).abs().max() < 0.5
    # every rendering of a sentence is in the same split
    assert (df.groupby("slurp_id")["split"].nunique() == 1).all()

    # same settings elsewhere -> the same bytes
    build_corpus(records, tmp_path / "b", cfg, progress=False)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")

    # resume: a lost file is rebuilt identically, existing files are not rewritten
    digests = _digests(tmp_path / "a")
    lost = tmp_path / "a" / df.loc[3, "noisy_path"]
    lost.unlink()
    kept = tmp_path / "a" / df.loc[0, "clean_path"]
    mtime = kept.stat().st_mtime_ns
    build_corpus(records, tmp_path / "a", cfg, progress=False)
    assert _digests(tmp_path / "a") == digests
    assert kept.stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "a").rglob("*") if ".tmp" in p.name]


def test_other_settings_are_refused_and_nothing_changes(records, tmp_path):
    cfg = CorpusConfig(SPEAKERS[:1], workers=1)
    path = build_corpus(records[:3], tmp_path, cfg, progress=False)
    before = _digests(tmp_path), path.read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        build_corpus(records[:3], tmp_path, CorpusConfig(SPEAKERS[:1], seed=7, workers=1), progress=False)
    assert (_digests(tmp_path), path.read_bytes()) == before


def test_plan_assigns_speakers_evenly_and_refuses_duplicate_ids(records):
    utts = plan(records, CorpusConfig(SPEAKERS))
    assert len({u.speaker for u in utts}) == len(SPEAKERS)
    with pytest.raises(ValueError, match="appears twice"):
        plan(records[:2] + records[:1], CorpusConfig(SPEAKERS))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_manifest_formats(records, tmp_path, fmt):
    path = build_corpus(records[:4], tmp_path, CorpusConfig(SPEAKERS[:1], manifest_format=fmt, workers=1), progress=False)
    assert path.name == f"manifest.{fmt}"
    df = read_manifest(path)
    assert len(df) == 4 and df["sample_rate"].eq(16000).all()
