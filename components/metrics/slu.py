"""SLURP's SLU metrics, as the official scorer computes them, and the NFA paper's NLU CER.

Reimplemented from the definitions of SLURP's evaluation scripts
(github.com/pswietojanski/slurp, ``scripts/evaluation``: ``evaluate.py``,
``metrics/metrics.py`` classes ``FMeasure``, ``SpanFMeasure``,
``SpanDistanceFMeasure``, ``SLUF1``, ``metrics/distance.py``, ``util.py``) and
the paper (Bastianelli et al., "SLURP: A Spoken Language Understanding
Resource Package", EMNLP 2020). What they define, in our words:

- **Scenario / action / intent accuracy.** The official scorer tallies each
  label as a micro-averaged F-measure (a hit is a TP of the label, a miss is
  an FP of the predicted label and an FN of the gold one); for single-label
  classification micro F1 equals accuracy, which is what we return. Intent is
  ``scenario_action`` built from the two fields, never the raw ``intent``.
- **Entity span F1** (``SpanFMeasure``): a predicted entity is a TP when an
  identical ``(type, filler)`` pair is still unused in the gold list (it is
  then used up, so duplicates count as often as they occur), else an FP;
  gold entities left over are FNs. Comparison is exact (no normalisation).
- **Distance F1** (``SpanDistanceFMeasure``), per distance ``word`` or
  ``char``: predicted entities are visited in order. If some gold entity of
  the same type is left, the one whose filler is closest (first on ties) is
  consumed and the pair adds **TP += 1, FP += d, FN += d**, with ``d`` the
  filler distance (gold, predicted); otherwise the prediction is an FP
  (+1). Gold entities left at the end are FNs (+1). The matching is greedy
  in prediction order, not an optimal assignment.
- Distances: ``word`` is the WER of the predicted filler against the gold one
  (word edits / gold words, whitespace-split, *not* capped at 1); ``char`` is
  the normalised Levenshtein distance over characters, edits / max(len(gold),
  len(pred)) (textdistance's ``normalized_distance``, in [0, 1]; 0 when both
  are empty). For an empty gold filler (never in the release: spans are not
  empty) the word distance is the number of predicted words, as jiwer 4 does.
- **SLU-F1** (``SLUF1``): the word-distance and the char-distance tallies are
  *summed* label by label and one F1 is computed over the sums. It is not
  the mean of the two distance F1s.
- Precision, recall and F1 are 0 when their denominators are 0 (as
  ``compute_metrics`` does): an empty gold and an empty prediction give F1 0.
- ``average="micro"`` pools counts over labels (the official default);
  ``"macro"`` is the unweighted mean of per-label scores (``--average macro``).

**NLU CER** (NFA paper, arXiv 2310.17664, the cascade's headline error): the
corpus CER (:func:`components.metrics.asr.cer`, no text normalisation)
between serialised semantics, see :func:`serialise`.

Inputs are :class:`components.data.slurp.Prediction` objects; gold is a
prediction too (:func:`components.data.slurp.gold_prediction`). Pair them with
:func:`align`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from rapidfuzz.distance import Levenshtein

from components.data.slurp import Prediction
from components.metrics.asr import cer

__all__ = [
    "AlignmentError",
    "Tally",
    "align",
    "accuracy",
    "word_distance",
    "char_distance",
    "span_tally",
    "distance_tally",
    "serialise",
    "nlu_cer",
    "slu_metrics",
]


class AlignmentError(ValueError):
    """Predictions that name no gold utterance, or gold utterances without a prediction."""


# --------------------------------------------------------------------------- pairing


def _key(p: Prediction) -> tuple[str, object]:
    return ("slurp_id", p.slurp_id) if p.slurp_id is not None else ("file", p.file)


def _show(keys: Iterable[tuple[str, object]], limit: int = 10) -> str:
    keys = list(keys)
    shown = ", ".join(f"{kind} {value!r}" if kind == "file" else f"{kind} {value}" for kind, value in keys[:limit])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def align(
    gold: Sequence[Prediction], predicted: Sequence[Prediction], *, allow_missing: bool = False
) -> list[tuple[Prediction, Prediction]]:
    """Pair every prediction with its gold: ``[(gold, predicted), ...]`` in prediction order.

    A prediction with a ``slurp_id`` is matched by slurp_id (preferred),
    otherwise by ``file`` against the gold's files (so gold may hold one entry
    per recording, as the official scorer keys gold by recording file).
    Several predictions may share a gold (several renderings of one sentence);
    each becomes its own pair. Raises :class:`AlignmentError` naming the
    predictions that match no gold, and, unless ``allow_missing``, the gold
    utterances (slurp_id, or file when gold has no slurp_id) that no
    prediction covers. The official scorer silently skips both.
    """
    by_id: dict[object, Prediction] = {}
    by_file: dict[str, Prediction] = {}
    for g in gold:
        if g.slurp_id is not None:
            by_id.setdefault(g.slurp_id, g)
        by_file.setdefault(g.file, g)
    pairs, extra, covered = [], [], set()
    for p in predicted:
        g = by_id.get(p.slurp_id) if p.slurp_id is not None else by_file.get(p.file)
        if g is None:
            extra.append(_key(p))
            continue
        covered.add(_key(g))
        pairs.append((g, p))
    problems = []
    if extra:
        problems.append(f"{len(extra)} prediction(s) match no gold utterance: {_show(extra)}")
    if not allow_missing:
        missing = list(dict.fromkeys(k for k in map(_key, gold) if k not in covered))
        if missing:
            problems.append(f"{len(missing)} gold utterance(s) have no prediction: {_show(missing)}")
    if problems:
        raise AlignmentError("; ".join(problems))
    return pairs


# --------------------------------------------------------------------------- tallies


@dataclass
class Tally:
    """Per-label true positives, false positives and false negatives (floats: distances are fractional)."""

    tp: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    fp: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    fn: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def __add__(self, other: "Tally") -> "Tally":
        out = Tally()
        for mine, theirs, dest in ((self.tp, other.tp, out.tp), (self.fp, other.fp, out.fp), (self.fn, other.fn, out.fn)):
            for d in (mine, theirs):
                for label, v in d.items():
                    dest[label] += v
        return out

    @property
    def labels(self) -> list[str]:
        return sorted(set(self.tp) | set(self.fp) | set(self.fn))

    def prf(self, average: str = "micro") -> dict[str, float]:
        """``{"precision", "recall", "f1", "tp", "fp", "fn"}``; micro pools counts, macro averages per-label scores."""
        tp, fp, fn = (sum(d.values()) for d in (self.tp, self.fp, self.fn))
        if average == "micro":
            p, r, f = _prf(tp, fp, fn)
        elif average == "macro":
            scores = [_prf(self.tp[lab], self.fp[lab], self.fn[lab]) for lab in self.labels]
            p, r, f = (sum(s[i] for s in scores) / len(scores) if scores else 0.0 for i in range(3))
        else:
            raise ValueError(f"average must be 'micro' or 'macro', got {average!r}")
        return {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn}


def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp > 0 else 0.0
    r = tp / (tp + fn) if tp + fn > 0 else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def accuracy(gold: Sequence[str], predicted: Sequence[str]) -> float:
    """Share of equal labels (= the official micro-F1 over single labels)."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold labels but {len(predicted)} predictions")
    if not gold:
        raise ValueError("no labels to score")
    return sum(g == p for g, p in zip(gold, predicted)) / len(gold)


def word_distance(gold: str, predicted: str) -> float:
    """WER of one filler: word edits / gold words (whitespace split); may exceed 1."""
    g, p = gold.split(), predicted.split()
    edits = Levenshtein.distance(g, p)
    return float(edits) / len(g) if g else float(edits)


def char_distance(gold: str, predicted: str) -> float:
    """Normalised character Levenshtein: edits / max(len(gold), len(predicted)), 0 when both are empty."""
    longest = max(len(gold), len(predicted))
    return Levenshtein.distance(gold, predicted) / longest if longest else 0.0


_DISTANCES = {"word": word_distance, "char": char_distance}


def span_tally(pairs: Iterable[tuple[Prediction, Prediction]]) -> Tally:
    """Exact ``(type, filler)`` matching over ``(gold, predicted)`` pairs (``SpanFMeasure``)."""
    t = Tally()
    for gold, pred in pairs:
        left = [(e.type, e.filler) for e in gold.entities]
        for e in pred.entities:
            if (e.type, e.filler) in left:
                left.remove((e.type, e.filler))
                t.tp[e.type] += 1
            else:
                t.fp[e.type] += 1
        for typ, _ in left:
            t.fn[typ] += 1
    return t


def distance_tally(pairs: Iterable[tuple[Prediction, Prediction]], distance: str = "word") -> Tally:
    """Type-matched entities with filler-distance penalties (``SpanDistanceFMeasure``); see the module doc."""
    dist = _DISTANCES[distance]
    t = Tally()
    for gold, pred in pairs:
        left = [(e.type, e.filler) for e in gold.entities]
        for e in pred.entities:
            best, best_d = None, float("inf")
            for i, (typ, filler) in enumerate(left):
                if typ == e.type:
                    d = dist(filler, e.filler)
                    if d < best_d:
                        best, best_d = i, d
            if best is None:
                t.fp[e.type] += 1
                continue
            left.pop(best)
            t.tp[e.type] += 1
            t.fp[e.type] += best_d
            t.fn[e.type] += best_d
        for typ, _ in left:
            t.fn[typ] += 1
    return t


# --------------------------------------------------------------------------- NLU CER


def serialise(p: Prediction) -> str:
    """The semantic string scored by NLU CER: ``"<scenario> <action> <type1> <filler1> <type2> <filler2> ..."``.

    Entities in their listed order (gold: the release's order), fields joined
    by single spaces, runs of whitespace inside a field collapsed. Labels keep
    their underscores (``date`` ``time_zone``); no other normalisation.
    """
    parts = [p.scenario, p.action]
    for e in p.entities:
        parts += [e.type, e.filler]
    return " ".join(" ".join(part.split()) for part in parts if part.strip())


def nlu_cer(pairs: Sequence[tuple[Prediction, Prediction]]) -> float:
    """Corpus CER (fraction) of the serialised predictions against the serialised gold."""
    return cer([serialise(g) for g, _ in pairs], [serialise(p) for _, p in pairs], normalise=False)


# --------------------------------------------------------------------------- all at once


def slu_metrics(pairs: Sequence[tuple[Prediction, Prediction]], *, average: str = "micro") -> dict[str, float | int]:
    """Every SLU metric over ``(gold, predicted)`` pairs (from :func:`align`).

    Returns fractions: ``scenario_acc``, ``action_acc``, ``intent_acc``,
    ``entity_f1`` (exact span F1), ``slu_f1`` (official SLU-F1, word + char
    tallies summed), ``slu_f1_word``, ``slu_f1_char`` (the two distance F1s),
    ``nlu_cer``, and ``n`` (pairs).
    """
    pairs = list(pairs)
    if not pairs:
        raise ValueError("no (gold, prediction) pairs to score")
    golds, preds = [g for g, _ in pairs], [p for _, p in pairs]
    word, char = distance_tally(pairs, "word"), distance_tally(pairs, "char")
    return {
        "scenario_acc": accuracy([g.scenario for g in golds], [p.scenario for p in preds]),
        "action_acc": accuracy([g.action for g in golds], [p.action for p in preds]),
        "intent_acc": accuracy([g.intent for g in golds], [p.intent for p in preds]),
        "entity_f1": span_tally(pairs).prf(average)["f1"],
        "slu_f1": (word + char).prf(average)["f1"],
        "slu_f1_word": word.prf(average)["f1"],
        "slu_f1_char": char.prf(average)["f1"],
        "nlu_cer": nlu_cer(pairs),
        "n": len(pairs),
    }
