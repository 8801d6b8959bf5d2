import json

import pytest

from components.data.slurp import (
    SlurpFormatError,
    gold_prediction,
    read_predictions,
    read_slurp,
    record_to_release,
    write_predictions,
    write_slurp,
)


def test_reader_resolves_entities_and_intent(slurp_jsonl):
    records = read_slurp(slurp_jsonl)
    assert len(records) >= 200
    rec = next(r for r in records if r.slurp_id == 13804) if any(r.slurp_id == 13804 for r in records) else records[0]
    for r in records:
        assert r.intent == f"{r.scenario}_{r.action}"
        for e in r.entities:
            # the filler is the lower-cased surfaces of the span's tokens, as the official scorer builds it
            assert e.filler == " ".join(t["surface"] for t in r.tokens if t["id"] in e.span).lower()
    if rec.slurp_id == 13804:
        assert [(e.type, e.filler) for e in rec.entities] == [("currency_name", "american dollar"), ("currency_name", "japanese yen")]


def test_release_round_trip_is_exact(slurp_jsonl, tmp_path):
    raw = [json.loads(line) for line in open(slurp_jsonl)]
    records = read_slurp(slurp_jsonl)
    assert [record_to_release(r) for r in records] == raw
    out = tmp_path / "again.jsonl"
    write_slurp(records, out)
    assert read_slurp(out) == records


def test_predictions_round_trip(slurp_jsonl, tmp_path):
    records = read_slurp(slurp_jsonl)[:50]
    preds = [gold_prediction(r) for r in records]
    path = tmp_path / "predictions.jsonl"
    write_predictions(preds, path)
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) == {"file", "slurp_id", "scenario", "action", "entities"}
    assert first["file"].endswith(".flac")  # keyed by the release's recording, as the official scorer expects
    assert read_predictions(path) == preds


def test_audio_paths_resolve_against_a_local_release(slurp_jsonl, tmp_path):
    rec = read_slurp(slurp_jsonl)[0]
    (tmp_path / rec.recordings[0]["file"]).write_bytes(b"fLaC")
    found = read_slurp(slurp_jsonl, audio_dir=tmp_path)[0]
    assert found.audio_paths == (str(tmp_path / rec.recordings[0]["file"]),)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"slurp_id": 1, "sentence": "hi"', "bad.jsonl:2: malformed JSON"),
        ('{"slurp_id": 1, "sentence": "hi"}', "bad.jsonl:2: missing field(s) scenario, action, tokens, entities"),
        (
            '{"slurp_id": 1, "sentence": "hi", "scenario": "a", "action": "b", "tokens": [{"id": 0, "surface": "hi"}], "entities": [{"span": [3], "type": "x"}]}',
            "bad.jsonl:2: entity",
        ),
    ],
)
def test_bad_lines_name_file_and_line(slurp_jsonl, tmp_path, line, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(open(slurp_jsonl).readline() + line + "\n")
    with pytest.raises(SlurpFormatError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_slurp(bad)
