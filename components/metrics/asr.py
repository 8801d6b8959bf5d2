"""Corpus-level word and character error rates (jiwer 4).

Conventions, used by every metric in :mod:`components.metrics`:

- Rates are **fractions** (0.0 = perfect, 0.25 = one error in four reference
  units). Reports multiply by 100. A rate can exceed 1.0 (insertions).
- Corpus level: total edits over total reference length, not the mean of
  per-utterance rates.
- Both sides go through :func:`normalise_text` unless ``normalise=False``;
  with ``normalise=False`` the result is exactly ``jiwer.wer`` / ``jiwer.cer``.
- Empty references (after normalisation) are allowed: they have no reference
  units, and every hypothesis unit of theirs counts as an insertion (this is
  what jiwer 4 does inside a corpus). When the whole corpus has no reference
  unit the rate is undefined: it is 0.0 if every hypothesis is empty too, and
  a ``ValueError`` otherwise (jiwer would return a raw insertion *count*).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

import jiwer

__all__ = ["normalise_text", "wer", "cer", "error_counts"]

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_SPACES = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower-case, turn punctuation and symbols (except apostrophes) into spaces, collapse spaces.

    >>> normalise_text("What's the rate of U.S.D. to CAD?")
    "what's the rate of u s d to cad"
    >>> normalise_text("jack@gmail  dot com")
    'jack gmail dot com'

    Typographic apostrophes become ``'``. Replacing (rather than deleting)
    punctuation keeps ``jack@gmail`` two words, as a recogniser would say it.
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    out = [" " if ch != "'" and unicodedata.category(ch)[0] in "PS" else ch for ch in text]
    return _SPACES.sub(" ", "".join(out)).strip()


def _prepare(refs: Sequence[str], hyps: Sequence[str], normalise: bool) -> tuple[list[str], list[str]]:
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError("refs and hyps must be sequences of strings, not a single string")
    refs, hyps = list(refs), list(hyps)
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no references to score")
    if normalise:
        refs = [normalise_text(r) for r in refs]
        hyps = [normalise_text(h) for h in hyps]
    return refs, hyps


def error_counts(refs: Sequence[str], hyps: Sequence[str], *, unit: str = "word", normalise: bool = True) -> dict[str, int]:
    """Corpus totals ``{"substitutions", "deletions", "insertions", "hits", "ref_len"}`` for unit ``word`` or ``char``."""
    refs, hyps = _prepare(refs, hyps, normalise)
    if unit == "word":
        out = jiwer.process_words(refs, hyps)
    elif unit == "char":
        out = jiwer.process_characters(refs, hyps)
    else:
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    s, d, i, h = out.substitutions, out.deletions, out.insertions, out.hits
    return {"substitutions": s, "deletions": d, "insertions": i, "hits": h, "ref_len": s + d + h}


def _rate(refs: Sequence[str], hyps: Sequence[str], unit: str, normalise: bool) -> float:
    c = error_counts(refs, hyps, unit=unit, normalise=normalise)
    errors = c["substitutions"] + c["deletions"] + c["insertions"]
    if c["ref_len"] == 0:
        if errors == 0:
            return 0.0
        raise ValueError(f"every reference is empty: {unit} error rate undefined ({errors} inserted {unit}s)")
    return errors / c["ref_len"]


def wer(refs: Sequence[str], hyps: Sequence[str], *, normalise: bool = True) -> float:
    """Corpus word error rate as a fraction: (S + D + I) / reference words."""
    return _rate(refs, hyps, "word", normalise)


def cer(refs: Sequence[str], hyps: Sequence[str], *, normalise: bool = True) -> float:
    """Corpus character error rate as a fraction; spaces between words count as characters (as in jiwer)."""
    return _rate(refs, hyps, "char", normalise)
