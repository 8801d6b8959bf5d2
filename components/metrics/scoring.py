"""Score a predictions file against SLURP gold: SLU metrics, NLU CER, and WER/CER when transcripts are given.

Predictions are lines of the official evaluation format (see
:mod:`components.data.slurp`), optionally carrying the ASR output::

    {"slurp_id": 13804, "file": "...", "scenario": "qa", "action": "currency",
     "entities": [{"type": "currency_name", "filler": "japanese yen"}], "transcript": "..."}

A line is matched to its gold by ``slurp_id`` (preferred) or else by
``file`` against the gold's recording file names. Several lines may name the
same utterance (several synthesized renderings): each is scored against it.
Transcripts come from a separate file (lines ``{"slurp_id"|"file", "transcript"}``,
used instead of the predictions' own) or from the predictions' ``transcript``
fields; they are scored against the gold ``sentence`` with
:func:`components.metrics.asr.wer` / ``cer`` (normalised text).
"""

from __future__ import annotations

import os
from pathlib import Path

from components.data.slurp import Entity, Prediction, SlurpFormatError, gold_prediction, read_slurp
from components.data.jsonl import iter_jsonl
from components.metrics.asr import cer, wer
from components.metrics.slu import align, slu_metrics

__all__ = ["score_files", "read_scored_predictions", "read_transcripts"]


def _lines(path: Path):
    """Yield (``file:line``, object) for every non-blank line."""
    for lineno, obj in iter_jsonl(path, SlurpFormatError):
        yield f"{path}:{lineno}", obj


def _slurp_id(obj: dict, where: str) -> int | None:
    sid = obj.get("slurp_id")
    if sid is None:
        return None
    if isinstance(sid, bool) or not isinstance(sid, (int, str)) or not str(sid).strip().lstrip("-").isdigit():
        raise SlurpFormatError(f"{where}: slurp_id must be an integer, got {sid!r}")
    return int(sid)


def _text(obj: dict, key: str, where: str, required: bool = True) -> str | None:
    if key not in obj or obj[key] is None:
        if required:
            raise SlurpFormatError(f"{where}: missing field {key!r}")
        return None
    if not isinstance(obj[key], str):
        raise SlurpFormatError(f"{where}: {key!r} must be a string, got {obj[key]!r}")
    return obj[key]


def read_scored_predictions(path: str | os.PathLike) -> list[tuple[Prediction, str | None]]:
    """``[(prediction, transcript or None), ...]`` from a predictions jsonl, validating every line.

    Like :func:`components.data.slurp.read_predictions` (same format), but
    every malformation (a bad entity, a non-integer slurp_id, ...) raises
    :class:`SlurpFormatError` naming ``file:line``, and the optional
    ``transcript`` field is kept. ``file`` may be left out when ``slurp_id``
    is given.
    """
    path = Path(path)
    out = []
    for where, o in _lines(path):
        sid = _slurp_id(o, where)
        if sid is None and "file" not in o:
            raise SlurpFormatError(f"{where}: needs a 'slurp_id' or a 'file'")
        file = _text(o, "file", where, required=False)
        scenario, action = _text(o, "scenario", where), _text(o, "action", where)
        if not isinstance(o.get("entities"), list):
            raise SlurpFormatError(f"{where}: 'entities' must be a list, got {o.get('entities')!r}")
        ents = []
        for e in o["entities"]:
            if not isinstance(e, dict) or not isinstance(e.get("type"), str) or not isinstance(e.get("filler"), str):
                raise SlurpFormatError(f"{where}: entity {e!r} needs string 'type' and 'filler'")
            ents.append(Entity(e["type"], e["filler"]))
        pred = Prediction(file if file is not None else str(sid), scenario, action, tuple(ents), sid)
        out.append((pred, _text(o, "transcript", where, required=False)))
    return out


def read_transcripts(path: str | os.PathLike) -> list[tuple[Prediction, str]]:
    """``[(key, transcript), ...]`` from lines ``{"slurp_id"|"file", "transcript"}``.

    The key is a label-less :class:`Prediction` carrying only the slurp_id /
    file, so that :func:`components.metrics.slu.align` can find its gold.
    """
    path = Path(path)
    out = []
    for where, o in _lines(path):
        sid = _slurp_id(o, where)
        file = _text(o, "file", where, required=sid is None)
        out.append((Prediction(file if file is not None else str(sid), "", "", (), sid), _text(o, "transcript", where)))
    return out


def _asr_scores(gold_by_id: dict[int, str], gold: list[Prediction], keyed: list[tuple[Prediction, str]], source: str) -> dict:
    try:
        pairs = align(gold, [k for k, _ in keyed], allow_missing=True)
    except ValueError as e:
        raise ValueError(f"{source} (transcripts): {e}") from None
    refs = [gold_by_id[g.slurp_id] for g, _ in pairs]
    hyps = [t for _, t in keyed]
    return {"wer": wer(refs, hyps), "cer": cer(refs, hyps), "n_transcripts": len(hyps)}


def score_files(
    gold_slurp_jsonl: str | os.PathLike,
    predictions_jsonl: str | os.PathLike,
    transcripts: str | os.PathLike | None = None,
    *,
    allow_missing: bool = False,
    average: str = "micro",
) -> dict:
    """Every metric of a predictions file against a SLURP release-format gold file.

    Returns fractions (x100 for reports): ``scenario_acc``, ``action_acc``,
    ``intent_acc``, ``entity_f1``, ``slu_f1`` (official SLU-F1),
    ``slu_f1_word``, ``slu_f1_char``, ``nlu_cer``, ``n`` (scored predictions),
    and when transcripts are available ``wer``, ``cer``, ``n_transcripts``.
    With ``allow_missing`` gold utterances without a prediction are skipped
    (as the official scorer does; ``n_gold_unpredicted`` counts them), else
    they are an error. Predictions naming no gold utterance are always an
    error. Raises :class:`SlurpFormatError` (``file:line``) on malformed input
    and :class:`components.metrics.slu.AlignmentError` on pairing problems.
    """
    records = read_slurp(gold_slurp_jsonl)
    # One gold entry per recording, so predictions keyed by any recording file find it.
    gold = [gold_prediction(r, f) for r in records for f in ([x["file"] for x in r.recordings] or [None])]
    sentence = {r.slurp_id: r.sentence for r in records}

    lines = read_scored_predictions(predictions_jsonl)
    if not lines:
        raise SlurpFormatError(f"{predictions_jsonl}: no predictions")
    preds = [p for p, _ in lines]
    pairs = align(gold, preds, allow_missing=allow_missing)
    result = slu_metrics(pairs, average=average)
    if allow_missing:
        result["n_gold_unpredicted"] = len(set(sentence) - {g.slurp_id for g, _ in pairs})

    if transcripts is not None:
        keyed = read_transcripts(transcripts)
        if not keyed:
            raise SlurpFormatError(f"{transcripts}: no transcripts")
        result.update(_asr_scores(sentence, gold, keyed, str(transcripts)))
    elif any(t is not None for _, t in lines):
        keyed = [(p, t) for p, t in lines if t is not None]
        result.update(_asr_scores(sentence, gold, keyed, str(predictions_jsonl)))
    return result
