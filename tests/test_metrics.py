"""Metrics: WER/CER against jiwer, SLURP's SLU metrics on hand-computed cases, parameter counts, scoring, `cascadapt score`."""

import json
import os
import random
import subprocess
import sys

import jiwer
import pytest
import torch
from torch import nn

from components.data.slurp import Entity, Prediction, SlurpFormatError, gold_prediction, read_slurp, write_predictions
from components.metrics.asr import cer, error_counts, normalise_text, wer
from components.metrics.params import by_prefix, count_parameters
from components.metrics.scoring import score_files
from components.metrics.slu import (
    AlignmentError,
    align,
    char_distance,
    distance_tally,
    serialise,
    slu_metrics,
    span_tally,
    word_distance,
)

CASCADAPT = os.path.join(os.path.dirname(sys.executable), "cascadapt")


# ----------------------------------------------------------------------------- ASR


def _random_sentence(rng: random.Random) -> str:
    words = ["a", "ab", "abc", "b", "ba", "cab", "d", "dd", "e"]
    return " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))


def test_wer_cer_equal_jiwer_on_random_strings():
    rng = random.Random(0)
    for _ in range(30):
        refs = [_random_sentence(rng) for _ in range(rng.randint(1, 6))]
        hyps = [_random_sentence(rng) if rng.random() > 0.1 else "" for _ in refs]
        assert wer(refs, hyps, normalise=False) == pytest.approx(jiwer.wer(refs, hyps))
        assert cer(refs, hyps, normalise=False) == pytest.approx(jiwer.cer(refs, hyps))
        # These strings are already normal: normalising changes nothing.
        assert wer(refs, hyps) == pytest.approx(jiwer.wer(refs, hyps))


def test_wer_is_corpus_level_fraction():
    # 1 error in 4 words + 0 in 1 word: corpus 1/5, not the mean of 1/4 and 0.
    assert wer(["a b c d", "e"], ["a x c d", "e"]) == pytest.approx(0.2)
    assert error_counts(["a b c d"], ["a b c d e"])["insertions"] == 1


def test_normalise_text():
    assert normalise_text("What's  the rate of U.S.D. to CAD?") == "what's the rate of u s d to cad"
    assert normalise_text("send it to jack@gmail dot com") == "send it to jack gmail dot com"
    assert normalise_text("it\u2019s") == "it's"
    assert wer(["What's the time?"], ["what's the time"]) == 0.0
    assert wer(["What's the time?"], ["what's the time"], normalise=False) > 0


def test_empty_references_are_explicit():
    # An empty reference adds its hypothesis words as insertions.
    assert wer(["a b", ""], ["a b", "c d"]) == pytest.approx(1.0)
    assert wer(["a b", "?"], ["a b", ""]) == 0.0  # "?" normalises to empty
    assert wer([""], [""]) == 0.0
    with pytest.raises(ValueError, match="every reference is empty"):
        wer([""], ["oops"])
    with pytest.raises(ValueError):
        wer(["a"], ["a", "b"])


# ----------------------------------------------------------------------------- SLU


def P(scenario="alarm", action="set", entities=(), sid=1, file="f.flac"):
    return Prediction(file, scenario, action, tuple(Entity(t, f) for t, f in entities), sid)


GOLD = P(entities=[("date", "tomorrow"), ("time", "five am")])


def test_perfect_prediction():
    m = slu_metrics([(GOLD, GOLD)])
    assert m == {
        "scenario_acc": 1.0, "action_acc": 1.0, "intent_acc": 1.0, "entity_f1": 1.0,
        "slu_f1": 1.0, "slu_f1_word": 1.0, "slu_f1_char": 1.0, "nlu_cer": 0.0, "n": 1,
    }


def test_wrong_scenario_only():
    wrong = P(scenario="calendar", entities=[("date", "tomorrow"), ("time", "five am")])
    m = slu_metrics([(GOLD, GOLD), (GOLD, wrong)])
    assert (m["scenario_acc"], m["action_acc"], m["intent_acc"]) == (0.5, 1.0, 0.5)
    assert m["entity_f1"] == m["slu_f1"] == 1.0
    # "alarm" -> "calendar": 6 edits over the two gold strings "alarm set date tomorrow time five am" (36 chars each).
    assert m["nlu_cer"] == pytest.approx(jiwer.cer(serialise(GOLD), serialise(wrong)) / 2)


def test_intent_is_scenario_action():
    gold = [P("weather", "query", sid=1), P("iot", "hue_lightoff", sid=2)]
    pred = [P("weather", "set", sid=1), P("iot", "hue_lightoff", sid=2)]
    m = slu_metrics(list(zip(gold, pred)))
    assert (m["scenario_acc"], m["action_acc"], m["intent_acc"]) == (1.0, 0.5, 0.5)
    assert gold[0].intent == "weather_query"


def test_partially_wrong_filler_gets_partial_credit():
    gold = P(entities=[("time", "five am")])
    pred = P(entities=[("time", "nine am")])
    pairs = [(gold, pred)]
    # Exact spans: no credit.
    assert span_tally(pairs).prf()["f1"] == 0.0
    # Word distance 1/2: TP 1, FP 0.5, FN 0.5 -> P = R = F1 = 2/3.
    w = distance_tally(pairs, "word").prf()
    assert (w["tp"], w["fp"], w["fn"]) == (1, 0.5, 0.5) and w["f1"] == pytest.approx(2 / 3)
    # Char distance: five->nine is 2 substitutions over 7 chars: TP 1, FP = FN = 2/7 -> F1 = 7/9.
    c = distance_tally(pairs, "char").prf()
    assert c["fp"] == pytest.approx(2 / 7) and c["f1"] == pytest.approx(7 / 9)
    # SLU-F1 sums both tallies: TP 2, FP = FN = 1/2 + 2/7 = 11/14 -> F1 = 2 / (2 + 11/14) = 28/39.
    m = slu_metrics(pairs)
    assert m["slu_f1"] == pytest.approx(28 / 39)
    assert m["slu_f1_word"] == pytest.approx(2 / 3) and m["slu_f1_char"] == pytest.approx(7 / 9)
    assert m["nlu_cer"] == pytest.approx(2 / len("alarm set time five am"))


def test_word_distance_is_not_capped():
    # Official word distance is jiwer's WER: 3 inserted words over 1 gold word = 3.0 (char distance stays <= 1).
    assert word_distance("paris", "the city of paris") == 3.0
    assert char_distance("paris", "the city of paris") == pytest.approx(12 / 17)
    w = distance_tally([(P(entities=[("place_name", "paris")]), P(entities=[("place_name", "the city of paris")]))]).prf()
    assert (w["tp"], w["fp"], w["fn"]) == (1, 3.0, 3.0) and w["f1"] == pytest.approx(0.25)
    assert char_distance("", "") == 0.0 and word_distance("a", "") == 1.0


def test_missing_entity():
    pred = P(entities=[("date", "tomorrow")])
    m = slu_metrics([(GOLD, pred)])
    # TP 1, FP 0, FN 1: P 1, R 1/2, F1 2/3 for every entity metric.
    assert m["entity_f1"] == m["slu_f1"] == m["slu_f1_word"] == m["slu_f1_char"] == pytest.approx(2 / 3)


def test_extra_entity_and_wrong_type():
    gold = P(entities=[("date", "tomorrow")])
    extra = P(entities=[("date", "tomorrow"), ("place_name", "paris")])
    assert slu_metrics([(gold, extra)])["slu_f1"] == pytest.approx(2 / 3)
    # A right filler under the wrong type is an FP and an FN, in every metric.
    retyped = P(entities=[("time", "tomorrow")])
    t = distance_tally([(gold, retyped)], "char")
    assert (dict(t.tp), dict(t.fp), dict(t.fn)) == ({}, {"time": 1}, {"date": 1})
    assert slu_metrics([(gold, retyped)])["slu_f1"] == 0.0


def test_duplicate_entity_types():
    gold = P(entities=[("person", "john"), ("person", "mary smith")])
    pred = P(entities=[("person", "mary smith"), ("person", "jon")])
    pairs = [(gold, pred)]
    # Exact: "mary smith" matches, "jon" is FP, "john" FN -> F1 1/2.
    assert span_tally(pairs).prf()["f1"] == pytest.approx(0.5)
    # Distance: "mary smith" takes its closest gold ("mary smith", d 0), then "jon" takes "john".
    w = distance_tally(pairs, "word").prf()  # d("john", "jon") = 1 word sub / 1 word
    assert (w["tp"], w["fp"], w["fn"]) == (2, 1.0, 1.0) and w["f1"] == pytest.approx(2 / 3)
    c = distance_tally(pairs, "char").prf()  # 1 deletion / 4 chars
    assert c["fp"] == pytest.approx(0.25) and c["f1"] == pytest.approx(8 / 9)
    # Duplicated identical entities count as often as they occur.
    twice = P(entities=[("person", "john"), ("person", "john")])
    t = span_tally([(P(entities=[("person", "john")]), twice)]).prf()
    assert (t["tp"], t["fp"], t["fn"]) == (1, 1, 0)


def test_no_entities_anywhere_scores_zero_f1_like_the_official_scorer():
    m = slu_metrics([(P(), P())])
    assert m["intent_acc"] == 1.0 and m["entity_f1"] == 0.0 and m["slu_f1"] == 0.0 and m["nlu_cer"] == 0.0


def test_macro_average():
    gold = P(entities=[("date", "tomorrow"), ("time", "five am")])
    pred = P(entities=[("date", "tomorrow")])
    t = span_tally([(gold, pred)])
    assert t.prf("macro")["f1"] == pytest.approx(0.5)  # date F1 1, time F1 0
    assert t.prf("micro")["f1"] == pytest.approx(2 / 3)


def test_serialise():
    assert serialise(GOLD) == "alarm set date tomorrow time five am"
    assert serialise(P("iot", "hue_lightoff")) == "iot hue_lightoff"


def test_align_by_slurp_id_or_file_and_errors():
    g1, g2 = P(sid=1, file="a.flac"), P("iot", "quiet", sid=2, file="b.flac")
    by_file = Prediction("b.flac", "iot", "quiet")
    pairs = align([g1, g2], [P(sid=1, file="x"), P(sid=1, file="y"), by_file])
    assert [g.slurp_id for g, _ in pairs] == [1, 1, 2]
    with pytest.raises(AlignmentError, match=r"no prediction: slurp_id 2"):
        align([g1, g2], [P(sid=1)])
    assert len(align([g1, g2], [P(sid=1)], allow_missing=True)) == 1
    with pytest.raises(AlignmentError, match=r"match no gold utterance: slurp_id 7, file 'zzz.flac'"):
        align([g1, g2], [P(sid=7), Prediction("zzz.flac", "a", "b")], allow_missing=True)


# ----------------------------------------------------------------------------- parameters


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)  # 40
        self.encoder = nn.Linear(4, 4)  # 20, frozen below
        self.head = nn.Linear(4, 10)  # weight tied to embed (40, not counted again) + bias 10
        self.head.weight = self.embed.weight
        self.adapters = nn.ModuleDict({"task_a": nn.Linear(4, 2), "task_b": nn.Linear(4, 3)})  # 10, 15
        self.scale = nn.Parameter(torch.ones(1))  # 1, on the root
        self.encoder.requires_grad_(False)


def test_count_parameters_with_frozen_part_and_tied_weight():
    c = count_parameters(Tiny())
    assert (c["total"], c["trainable"]) == (96, 76)
    assert c["per_module"] == {
        "embed": {"total": 40, "trainable": 40},
        "encoder": {"total": 20, "trainable": 0},
        "head": {"total": 10, "trainable": 10},
        "adapters": {"total": 25, "trainable": 25},
        "<root>": {"total": 1, "trainable": 1},
    }
    assert sum(m["total"] for m in c["per_module"].values()) == c["total"]


def test_by_prefix():
    groups = by_prefix(Tiny(), {
        "task_a": ["adapters.task_a."],
        "task_b": ["adapters.task_b."],
        "head": ["head."],  # its tied weight is found through its alias
        "backbone": ["embed.", "encoder.", "head."],  # the tied weight counts once
        "nothing": [],
    })
    assert groups == {
        "task_a": {"total": 10, "trainable": 10},
        "task_b": {"total": 15, "trainable": 15},
        "head": {"total": 50, "trainable": 50},
        "backbone": {"total": 70, "trainable": 50},
        "nothing": {"total": 0, "trainable": 0},
    }


# ----------------------------------------------------------------------------- scoring files


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_score_files_round_trip_is_perfect(slurp_jsonl, tmp_path):
    records = read_slurp(slurp_jsonl)
    write_predictions([gold_prediction(r) for r in records], tmp_path / "pred.jsonl")
    m = score_files(slurp_jsonl, tmp_path / "pred.jsonl")
    assert m["n"] == len(records)
    assert all(m[k] == 1.0 for k in ("scenario_acc", "action_acc", "intent_acc", "entity_f1", "slu_f1", "slu_f1_word", "slu_f1_char"))
    assert m["nlu_cer"] == 0.0 and "wer" not in m

    transcripts = _write_jsonl(tmp_path / "asr.jsonl", [{"slurp_id": r.slurp_id, "transcript": r.sentence.upper()} for r in records])
    m = score_files(slurp_jsonl, tmp_path / "pred.jsonl", transcripts)
    assert (m["wer"], m["cer"], m["n_transcripts"]) == (0.0, 0.0, len(records))


def test_score_files_renderings_files_and_inline_transcripts(slurp_jsonl, tmp_path):
    records = read_slurp(slurp_jsonl)[:4]
    rows = []
    for r in records:
        g = gold_prediction(r)
        ents = [{"type": e.type, "filler": e.filler} for e in g.entities]
        # Two renderings of each sentence: one perfect, one with the wrong scenario and half the words lost.
        rows.append({"slurp_id": r.slurp_id, "file": "x.flac", "scenario": g.scenario, "action": g.action, "entities": ents,
                     "transcript": r.sentence})
        rows.append({"slurp_id": str(r.slurp_id), "file": "y.flac", "scenario": "nope", "action": g.action, "entities": ents,
                     "transcript": ""})
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(line for line in slurp_jsonl.read_text().splitlines(keepends=True)[:4]))
    m = score_files(gold, _write_jsonl(tmp_path / "p.jsonl", rows))
    assert m["n"] == 8 and m["scenario_acc"] == 0.5 and m["intent_acc"] == 0.5 and m["action_acc"] == 1.0
    assert m["wer"] == pytest.approx(0.5) and m["n_transcripts"] == 8

    # Keyed by the gold's recording files, as the official scorer keys predictions.
    by_file = [{"file": r.recordings[-1]["file"], "scenario": r.scenario, "action": r.action,
                "entities": [{"type": e.type, "filler": e.filler} for e in r.entities]} for r in records if r.recordings]
    assert score_files(gold, _write_jsonl(tmp_path / "f.jsonl", by_file))["intent_acc"] == 1.0


def test_score_files_missing_and_extra(slurp_jsonl, tmp_path):
    records = read_slurp(slurp_jsonl)
    write_predictions([gold_prediction(r) for r in records[:3]], tmp_path / "some.jsonl")
    with pytest.raises(AlignmentError, match="have no prediction"):
        score_files(slurp_jsonl, tmp_path / "some.jsonl")
    m = score_files(slurp_jsonl, tmp_path / "some.jsonl", allow_missing=True)
    assert m["n"] == 3 and m["n_gold_unpredicted"] == len(records) - 3
    write_predictions([Prediction("f", "a", "b", (), 987654321)], tmp_path / "extra.jsonl")
    with pytest.raises(AlignmentError, match="slurp_id 987654321"):
        score_files(slurp_jsonl, tmp_path / "extra.jsonl", allow_missing=True)


@pytest.mark.parametrize("bad", ['{"slurp_id": 1, "file": "a", "scenario": "x", "action": "y", "entities": [{"type": "t"}]}',
                                 '{"slurp_id": "one", "file": "a", "scenario": "x", "action": "y", "entities": []}',
                                 '{"file": "a", "scenario": "x"',
                                 '["not", "an", "object"]'])
def test_score_files_names_file_and_line_of_bad_predictions(slurp_jsonl, tmp_path, bad):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(slurp_jsonl.read_text().splitlines(keepends=True)[0])
    write_predictions([gold_prediction(r) for r in read_slurp(gold)], tmp_path / "p.jsonl")
    path = tmp_path / "p.jsonl"
    path.write_text(path.read_text() + "\n" + bad + "\n")
    with pytest.raises(SlurpFormatError, match=f"{path}:3: "):
        score_files(gold, path)


# ----------------------------------------------------------------------------- `cascadapt score`


def test_cli_score_prints_json_and_fails_on_malformed_line(slurp_jsonl, tmp_path):
    records = read_slurp(slurp_jsonl)
    write_predictions([gold_prediction(r) for r in records], tmp_path / "pred.jsonl")
    proc = subprocess.run([CASCADAPT, "score", "--gold", str(slurp_jsonl), "--predictions", str(tmp_path / "pred.jsonl")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)
    assert m["intent_acc"] == 1.0 and m["slu_f1"] == 1.0 and m["n"] == len(records)

    lines = (tmp_path / "pred.jsonl").read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(lines[0] + '{"slurp_id": 1, "scenario": \n' + "".join(lines[1:]))
    proc = subprocess.run([CASCADAPT, "score", "--gold", str(slurp_jsonl), "--predictions", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"{bad}:2: malformed JSON" in proc.stderr
