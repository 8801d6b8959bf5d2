"""Drift: per-utterance features of real synthesized speech; Evidently finds a noisier batch and not a batch
from the same distribution; a malformed batch fails naming file, row and field; the drift pipeline stores
the verdict and the HTML report on a real (isolated) ZenML store."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from components.data.corpus import CorpusConfig, build_corpus
from components.data.slurp import read_records
from components.data.speakers import parse_voices
from components.drift import FEATURES, DriftInputError, audio_features, detect_drift, read_batch, utterance_features
from tests.conftest import REPO, SAMPLE


def corpus(root, records, snr: float):
    cfg = CorpusConfig(parse_voices("espeak-ng:en-us,flite:slt"), snrs=[snr], noise_kinds=["white"], speakers_per_text=2, workers=2)
    return build_corpus(records, root, cfg, progress=False)


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    """reference: 40 sentences x 2 voices at 20 dB; same: 30 other sentences at 20 dB; noisy: those at 0 dB.
    The sentences are drawn at random: the sample file is grouped by scenario."""
    records = random.Random(0).sample(read_records(SAMPLE), 70)
    root = tmp_path_factory.mktemp("drift")
    return {
        "reference": corpus(root / "reference", records[:40], 20.0),
        "same": corpus(root / "same", records[40:], 20.0),
        "noisy": corpus(root / "noisy", records[40:], 0.0),
    }


def features(path):
    return utterance_features(read_batch(path), path)


def test_audio_features_measure_length_level_and_noise():
    rng = np.random.default_rng(0)
    tone = 0.5 * np.sin(2 * np.pi * 220 * np.arange(16_000) / 16_000)
    speech_like = np.concatenate([tone, np.zeros(8_000)]) + 0.001 * rng.standard_normal(24_000)
    quiet, loud = audio_features(speech_like, 16_000), audio_features(speech_like + 0.1 * rng.standard_normal(24_000), 16_000)
    assert quiet["duration_s"] == 1.5 and -12 < quiet["level_dbfs"] < -6
    assert quiet["snr_est_db"] > 40 > loud["snr_est_db"] > 0  # noise fills the pauses


def test_a_noisier_batch_drifts_and_one_of_the_same_kind_does_not(batches):
    reference = features(batches["reference"])
    assert list(reference.columns) == ["utt_id", *[f for f in FEATURES if f != "confidence"]] and len(reference) == 80
    same, _ = detect_drift(reference, features(batches["same"]), drift_share=0.3)
    noisy, html = detect_drift(reference, features(batches["noisy"]), drift_share=0.3)
    # one column may fail by chance (each test has a 5-10 % false-alarm rate); the verdict needs 2 of 6
    assert not same["drifted"] and len(same["drifted_columns"]) <= 1 and not {"snr_est_db", "level_dbfs"} & set(same["drifted_columns"])
    assert noisy["drifted"] and {"snr_est_db", "level_dbfs"} <= set(noisy["drifted_columns"])
    assert "duration_s" not in noisy["drifted_columns"]  # the same sentences and voices: only the noise changed
    assert html.lstrip().startswith("<!DOCTYPE html>") and "snr_est_db" in html
    again, _ = detect_drift(reference, features(batches["noisy"]), drift_share=0.3)
    assert again["columns"] == noisy["columns"]  # the intent mix's permutation test is seeded


def test_model_features_come_from_the_cascade(batches):
    from components.models.asr import ASRConfig, ConformerCTC
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer

    labels = NluLabels.from_label_set()
    cascade = Cascade(MaskEnhancer(), ConformerCTC(ASRConfig(d_model=32, ffn=64, layers=1, heads=4)), build_nlu(labels), labels)
    table = utterance_features(read_batch(batches["same"]).head(6), batches["same"], cascade, batch_size=4)
    assert list(table.columns) == ["utt_id", *FEATURES] and len(table) == 6
    assert table["confidence"].between(0, 1).all() and set(table["intent"]) <= set(labels.intents)


def write_batch(tmp_path, rows: list[dict], name: str = "batch.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def malformed(tmp_path, batches):
    good = read_batch(batches["same"]).head(2).to_dict("records")
    audio = str(batches["same"].parent / good[0]["noisy_path"])
    (tmp_path / "notes.wav").write_text("not audio")
    return {  # name -> (rows, words in the error)
        "no audio column": ([{"utt_id": "a", "text": "hi"}], "no audio column"),
        "missing file": ([{"utt_id": "a", "noisy_path": "nowhere.flac", "text": "hi", "intent": "qa_factoid"}], "row 1 (a): field 'noisy_path': cannot read"),
        "empty path": ([{"utt_id": "a", "noisy_path": audio, "text": "hi", "intent": "qa_factoid"}, {"utt_id": "b", "noisy_path": "", "text": "x", "intent": "qa_factoid"}], "row 2 (b): field 'noisy_path' is empty"),
        "not audio": ([{"utt_id": "a", "noisy_path": "notes.wav", "text": "hi", "intent": "qa_factoid"}], "notes.wav"),
        "no labels, no model": ([{"utt_id": "a", "noisy_path": audio}], "field 'text'"),
    }


@pytest.mark.parametrize("case", ["no audio column", "missing file", "empty path", "not audio", "no labels, no model"])
def test_a_malformed_batch_fails_naming_file_row_and_field(case, tmp_path, batches):
    rows, words = malformed(tmp_path, batches)[case]
    path = write_batch(tmp_path, rows)
    with pytest.raises(DriftInputError, match="batch.jsonl") as err:
        utterance_features(read_batch(path), path)
    assert words in str(err.value)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DriftInputError, match="no rows|missing column"):
        read_batch(tmp_path / "empty.jsonl")


INSPECT = textwrap.dedent(
    """
    import json, sys
    from zenml.client import Client
    run = Client().list_pipeline_runs(pipeline_name="drift_pipeline", size=1, sort_by="desc:created").items[0]
    outputs = run.steps["detect_data_drift"].outputs
    json.dump({"status": str(run.status), "drift": outputs["drift"][0].load(), "report": str(outputs["drift_report"][0].load())[:2000],
               "metadata": run.steps["detect_data_drift"].run_metadata.get("drift")}, sys.stdout, default=str)
    """
)


@pytest.mark.timeout(900)
def test_the_drift_pipeline_stores_the_verdict_and_the_report(batches, tmp_path):
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
    config = tmp_path / "drift.yaml"
    config.write_text(f"parameters: {{new_batch: {batches['noisy']}, reference_manifest: {batches['reference']}, use_model: false}}\n")
    bin_dir = os.path.dirname(sys.executable)
    proc = subprocess.run([f"{bin_dir}/zenml", "pipeline", "run", "pipelines.drift_pipeline.drift_pipeline", "-c", str(config)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found = json.loads(subprocess.run([sys.executable, "-c", INSPECT], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout)
    assert found["drift"]["drifted"] and "snr_est_db" in found["drift"]["drifted_columns"]
    assert found["metadata"]["drifted"] and found["report"].lstrip().startswith("<")

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"parameters: {{new_batch: {write_batch(tmp_path, [{'utt_id': 'a'}])}, reference_manifest: {batches['reference']}, use_model: false}}\n")
    proc = subprocess.run([f"{bin_dir}/zenml", "pipeline", "run", "pipelines.drift_pipeline.drift_pipeline", "-c", str(bad)], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "no audio column" in proc.stdout + proc.stderr


DECISIONS = {  # name -> (drift result, force, retrain, words in the reasons)
    "quiet": ({"drifted": False, "drifted_columns": [], "drift_share": 0.0, "confidence": {"reference_mean": 0.8, "current_mean": 0.79}}, False, False, ""),
    "drift": ({"drifted": True, "drifted_columns": ["snr_est_db", "level_dbfs"], "drift_share": 0.33}, False, True, "data drift in snr_est_db, level_dbfs (33%"),
    "confidence drop": ({"drifted": False, "drifted_columns": [], "drift_share": 0.0, "confidence": {"reference_mean": 0.8, "current_mean": 0.6}}, False, True, "confidence fell from 0.800 to 0.600"),
    "forced": ({"drifted": False, "drifted_columns": [], "drift_share": 0.0}, True, True, "forced"),
}


@pytest.mark.parametrize("case", DECISIONS)
def test_retraining_follows_drift_or_a_confidence_drop(case):
    from components.drift import retraining_decision

    drift, force, retrain, words = DECISIONS[case]
    decision = retraining_decision(drift, max_confidence_drop=0.05, force=force)
    assert decision["retrain"] == retrain and words in " ".join(decision["reasons"])
