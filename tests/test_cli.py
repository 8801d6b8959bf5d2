"""The public `cascadapt synth` / `cascadapt validate` contract, through the installed console script."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import soundfile as sf

CASCADAPT = os.path.join(os.path.dirname(sys.executable), "cascadapt")


def run(*args):
    return subprocess.run([CASCADAPT, *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def corpus(slurp_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "corpus"
    proc = run("synth", "--slurp-jsonl", str(slurp_jsonl), "--out", str(out), "--voices", "flite:slt,espeak-ng:en-gb+m3:-2:0.9",
               "--snr", "5,15", "--limit", "8", "--seed", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return out


def test_synth_writes_audio_and_manifest(corpus):
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["snr"] for r in rows} <= {5.0, 15.0}
    for r in rows:
        for key in ("clean_path", "noisy_path"):
            info = sf.info(corpus / r[key])
            assert info.samplerate == 16000 and info.channels == 1


def test_validate_passes_a_clean_manifest(corpus):
    proc = run("validate", "--manifest", str(corpus / "manifest.jsonl"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "all checks passed" in proc.stdout


def test_validate_prints_every_bad_row_and_exits_1(corpus, tmp_path):
    bad = tmp_path / "corpus"
    shutil.copytree(corpus, bad)
    lines = (bad / "manifest.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    rows[1]["text"] = " "
    rows[4]["intent"] = "weather_teleport"
    (bad / rows[6]["noisy_path"]).write_bytes(b"not audio at all")
    (bad / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "report.html"
    proc = run("validate", "--manifest", str(bad / "manifest.jsonl"), "--report", str(report))
    assert proc.returncode == 1
    for i in (1, 4, 6):
        assert rows[i]["utt_id"] in proc.stdout
    assert "weather_teleport" in proc.stdout
    assert rows[4]["utt_id"] in report.read_text()


def test_malformed_lines_name_file_and_line(corpus, slurp_jsonl, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    good = (corpus / "manifest.jsonl").read_text().splitlines()
    manifest.write_text(good[0] + "\n" + good[1][:-5] + "\n")
    proc = run("validate", "--manifest", str(manifest))
    assert proc.returncode == 1 and f"{manifest}:2: malformed JSON" in proc.stderr

    text = tmp_path / "slurp.jsonl"
    text.write_text(open(slurp_jsonl).readline() + "{oops\n")
    proc = run("synth", "--slurp-jsonl", str(text), "--out", str(tmp_path / "out"), "--quiet")
    assert proc.returncode == 1 and f"{text}:2: malformed JSON" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_bad_flags_are_refused_clearly(slurp_jsonl, tmp_path):
    proc = run("synth", "--slurp-jsonl", str(slurp_jsonl), "--out", str(tmp_path / "o"), "--snr", "5,loud")
    assert proc.returncode == 2 and "--snr must be comma-separated numbers" in proc.stderr
    proc = run("synth", "--slurp-jsonl", str(slurp_jsonl), "--out", str(tmp_path / "o"), "--voices", "flite:nobody")
    assert proc.returncode == 1 and "unknown flite voice 'nobody'" in proc.stderr


def test_adapters_lists_every_method_with_its_fields():
    proc = run("adapters")
    assert proc.returncode == 0, proc.stderr
    assert "lora: LoRA" in proc.stdout and "  r = 8: Rank of the update." in proc.stdout
    proc = run("adapters", "houlsby")
    assert proc.returncode == 0 and proc.stdout.startswith("houlsby:") and "lora:" not in proc.stdout
    proc = run("adapters", "loar")
    assert proc.returncode == 1 and "no adapter method 'loar'; registered:" in proc.stderr
