"""Manifest validation on a small real corpus, with defects planted on copies of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from components.data.corpus import CorpusConfig, build_corpus
from components.data.manifest import COLUMNS, ManifestError, read_manifest, read_manifest_rows, write_manifest
from components.data.slurp import read_slurp
from components.data.speakers import Speaker
from components.data.validation import (
    LabelSetError,
    RowFailure,
    ValidationLimits,
    ValidationReport,
    load_label_set,
    validate_manifest,
)

SAMPLE = Path(__file__).resolve().parents[1] / "components" / "data" / "sample" / "slurp_devel_sample.jsonl"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A real 24-row corpus: 12 sentences, each said by two speakers (so slurp_ids repeat)."""
    recs = read_slurp(SAMPLE)[:12]
    cfg = CorpusConfig([Speaker("flite", "slt"), Speaker("espeak-ng", "en-us")], speakers_per_text=2)
    manifest = build_corpus(recs, tmp_path_factory.mktemp("corpus") / "c", cfg, progress=False)
    return manifest.parent


@pytest.fixture
def copy(corpus, tmp_path) -> Path:
    """A private copy of the corpus; returns its manifest path."""
    dst = tmp_path / "c"
    shutil.copytree(corpus, dst)
    return dst / "manifest.jsonl"


def plant(manifest: Path, row: int, **values) -> str:
    """Set values on one manifest row (columns become object so any type fits); return its utt_id."""
    df = read_manifest(manifest)
    for col, v in values.items():
        df[col] = df[col].astype(object)
        df.at[row, col] = v
    write_manifest(df, manifest)
    return df.at[row, "utt_id"]


def failed(report: ValidationReport) -> set[tuple[str, str]]:
    return {(f.utt_id, f.check) for f in report.failures}


def only_failure(report: ValidationReport) -> RowFailure:
    assert not report.ok
    assert len(report.failures) == 1, report.format_failures()
    return report.failures[0]


def test_clean_manifest_passes(copy):
    report = validate_manifest(copy)
    assert report.ok, report.format_failures()
    assert report.n_rows == 24
    assert report.failures == [] and report.format_failures() == ""
    names = {c["name"] for c in report.checks}
    assert {"sample_rate", "clean_file", "noisy_file", "utt_id_unique", "split_disjoint", "snr_matches"} <= names
    assert all(c["success"] and c["unexpected_count"] == 0 for c in report.checks)
    again = ValidationReport.from_dict(json.loads(report.to_json()))
    assert again == report
    assert "PASSED" in report.to_html()


def test_corrupt_audio(copy):
    df = read_manifest(copy)
    (copy.parent / df.at[3, "clean_path"]).write_bytes(b"this is not audio" * 64)
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.row, f.check) == (df.at[3, "utt_id"], 3, "clean_file")
    assert f.reason.startswith(f"clean file {df.at[3, 'clean_path']} cannot be decoded")


def test_missing_file(copy):
    df = read_manifest(copy)
    (copy.parent / df.at[5, "noisy_path"]).unlink()
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.check) == (df.at[5, "utt_id"], "noisy_file")
    assert f.reason == f"noisy file {df.at[5, 'noisy_path']} does not exist"
    assert f"{df.at[5, 'utt_id']} (row 5): noisy file" in validate_manifest(copy).format_failures()
    # Without the audio checks the manifest alone is fine.
    assert validate_manifest(copy, check_audio=False).ok


def test_wrong_sample_rate_in_file(copy):
    df = read_manifest(copy)
    path = copy.parent / df.at[2, "clean_path"]
    audio, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    n = int(len(audio) * 22050 / 16000)
    resampled = np.interp(np.linspace(0, len(audio) - 1, n), np.arange(len(audio)), audio).astype("float32")
    sf.write(path, resampled, 22050, subtype="PCM_16", format="FLAC")
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.check) == (df.at[2, "utt_id"], "clean_file_sample_rate")
    assert "sample rate 22050 != 16000" in f.reason


def test_wrong_sample_rate_in_manifest(copy):
    utt = plant(copy, 7, sample_rate=22050)
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.row, f.check, f.reason) == (utt, 7, "sample_rate", "sample rate 22050 != 16000")


def test_empty_text(copy):
    utt = plant(copy, 4, text="   ")
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.check, f.reason) == (utt, "text_non_empty", "text is empty")


def test_unknown_intent(copy):
    utt = plant(copy, 1, intent="foo_bar")
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.check, f.reason) == (utt, "intent_in_label_set", "intent 'foo_bar' not in the label set")
    # A caller's label set that knows the intent accepts it.
    labels = load_label_set()
    labels["intents"].add("foo_bar")
    assert validate_manifest(copy, labels=labels).ok


def test_duplicate_utt_id(copy):
    df = read_manifest(copy)
    plant(copy, 9, utt_id=df.at[0, "utt_id"])
    report = validate_manifest(copy)
    dup = [f for f in report.failures if f.check == "utt_id_unique"]
    assert [(f.utt_id, f.row) for f in dup] == [(df.at[0, "utt_id"], 0), (df.at[0, "utt_id"], 9)]
    assert "appears 2 times (rows 0, 9)" in dup[0].reason


def test_snr_mismatch(copy):
    df = read_manifest(copy)
    utt = plant(copy, 6, snr_measured=float(df.at[6, "snr"]) + 3.0)
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.check) == (utt, "snr_matches")
    assert "differs from requested" in f.reason and "by 3 dB" in f.reason
    # A looser tolerance accepts it.
    assert validate_manifest(copy, limits=ValidationLimits(snr_tolerance=5.0)).ok


def test_slurp_id_in_two_splits(copy):
    df = read_manifest(copy)
    sid = df.at[0, "slurp_id"]
    rows = df.index[df["slurp_id"] == sid].tolist()
    assert len(rows) == 2
    other = next(s for s in ("train", "nas_val", "test") if s != df.at[rows[1], "split"])
    plant(copy, rows[1], split=other)
    report = validate_manifest(copy)
    assert not report.ok
    assert failed(report) == {(df.at[r, "utt_id"], "split_disjoint") for r in rows}
    assert f"slurp_id {sid} is in 2 splits" in report.failures[0].reason


def test_unknown_split(copy):
    utt = plant(copy, 8, split="dev")
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.check) == (utt, "split")


def test_non_numeric_duration_is_a_row_failure(copy):
    utt = plant(copy, 3, duration="abc")
    f = only_failure(validate_manifest(copy))
    assert (f.utt_id, f.check, f.reason) == (utt, "duration_is_number", "duration 'abc' is not a number")


def test_values_out_of_range(copy):
    df = read_manifest(copy)
    a = plant(copy, 0, duration=45.0)
    b = plant(copy, 1, snr=99.0, snr_measured=99.0)
    report = validate_manifest(copy)
    assert failed(report) == {(a, "duration"), (b, "snr"), (b, "snr_measured")}
    assert "duration 45 s outside [0.3, 30] s" in report.format_failures()
    # Tight limits flag a real duration too.
    shortest = df["duration"].astype(float).idxmin()
    tight = validate_manifest(copy, limits=ValidationLimits(min_duration=float(df.at[shortest, "duration"]) + 1e-3, max_snr=100))
    assert (df.at[shortest, "utt_id"], "duration") in failed(tight)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_manifests(copy, fmt):
    df = read_manifest(copy)
    other = write_manifest(df, copy.with_suffix(f".{fmt}"))
    assert validate_manifest(other).ok
    df.at[5, "intent"] = "nope_nope"
    write_manifest(df, other)
    f = only_failure(validate_manifest(other))
    assert (f.utt_id, f.row, f.check) == (df.at[5, "utt_id"], 5, "intent_in_label_set")


def test_csv_with_non_numeric_value(copy):
    df = read_manifest(copy)
    df["snr"] = df["snr"].astype(object)
    df.at[2, "snr"] = "loud"
    csv = write_manifest(df, copy.with_suffix(".csv"))
    report = validate_manifest(csv)
    assert failed(report) == {(df.at[2, "utt_id"], "snr_is_number")}


def test_html_report(copy):
    utt = plant(copy, 2, intent="<b>bad</b>")
    page = validate_manifest(copy).to_html()
    assert page.startswith("<!DOCTYPE html>") and "FAILED" in page
    assert utt in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page
    assert "intent_in_label_set" in page


def test_manifest_level_problems_raise(copy):
    df = read_manifest(copy).drop(columns=["snr"])
    df.to_json(copy, orient="records", lines=True)
    with pytest.raises(ManifestError, match="missing column"):
        validate_manifest(copy)
    with pytest.raises(ManifestError, match="no such manifest"):
        validate_manifest(copy.parent / "absent.jsonl")


def test_manifest_rows_read_without_pandas_match_the_frame(copy):
    """transcribe's reader (plain dicts, no pandas for JSONL) gives read_manifest's rows and its errors."""
    df = read_manifest(copy)
    assert read_manifest_rows(copy) == df.to_dict("records")
    csv = copy.with_suffix(".csv")
    df.to_csv(csv, index=False)
    assert [r["utt_id"] for r in read_manifest_rows(csv, required=("utt_id",))] == df["utt_id"].tolist()
    df.drop(columns=["noisy_path"]).to_json(copy, orient="records", lines=True)
    with pytest.raises(ManifestError, match=f"{copy}: missing column\\(s\\) noisy_path"):
        read_manifest_rows(copy, required=("utt_id", "noisy_path"))
    copy.write_text('{"utt_id": "a", "noisy_path": "a.flac"}\n{broken\n')
    with pytest.raises(ManifestError, match=f"{copy}:2: malformed JSON"):
        read_manifest_rows(copy)


def test_load_label_set(tmp_path):
    labels = load_label_set()
    assert set(labels) == {"scenarios", "actions", "intents", "entity_types"}
    assert "iot_hue_lightoff" in labels["intents"] and "iot" in labels["scenarios"]
    derived = load_label_set(SAMPLE)
    recs = read_slurp(SAMPLE)
    assert derived["intents"] == {f"{r.scenario}_{r.action}" for r in recs}
    assert derived["intents"] <= labels["intents"]
    bad = tmp_path / "labels.json"
    bad.write_text("{not json")
    with pytest.raises(LabelSetError, match=str(bad)):
        load_label_set(bad)
    bad.write_text(json.dumps({"scenarios": ["a"]}))
    with pytest.raises(LabelSetError, match="intents"):
        load_label_set(bad)
    with pytest.raises(LabelSetError, match="no such"):
        load_label_set(tmp_path / "nope.json")
    bad_slurp = tmp_path / "release.jsonl"
    bad_slurp.write_text('{"slurp_id": 1}\n')
    with pytest.raises(LabelSetError, match=str(bad_slurp)):
        load_label_set(bad_slurp)


def test_null_values_are_row_failures(copy):
    df = read_manifest(copy)
    for col in ("utt_id", "text", "intent", "duration", "clean_path", "split", "slurp_id"):
        df[col] = df[col].astype(object)
        df.at[4, col] = None
    df.to_json(copy, orient="records", lines=True)
    report = validate_manifest(copy)
    mine = [f for f in report.failures if f.row == 4]
    assert {f.utt_id for f in report.failures} == {""}
    assert {f.check for f in mine} == {
        "utt_id_present", "slurp_id_is_number", "duration_is_number", "clean_file", "text_non_empty",
        "intent_in_label_set", "split",
    }
    assert "clean_path is missing" in report.format_failures()


def test_empty_manifest(tmp_path):
    m = write_manifest(pd.DataFrame(columns=list(COLUMNS)), tmp_path / "manifest.parquet")
    report = validate_manifest(m)
    assert report.n_rows == 0 and report.failures == []
