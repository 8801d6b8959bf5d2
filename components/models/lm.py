"""Word n-gram language models written as ARPA files (for KenLM / the CTC beam decoder).

Interpolated modified Kneser-Ney (Chen & Goodman), estimated the way KenLM's
lmplz does it, then written in backoff form:

- adjusted counts a(g): raw counts for the highest order and for n-grams that
  start with <s>; otherwise the number of distinct words seen to the left of g
  (continuation counts);
- three discounts per order, D1, D2, D3+, from the count-of-counts of the
  adjusted counts (or one fixed ``discount`` for all: interpolated absolute
  discounting with KN counts);
- p(w | h) = (a(hw) - D(a(hw))) / sum_v a(hv) + gamma(h) p(w | h'), with
  gamma(h) = sum_v D(a(hv)) / sum_v a(hv), and unigrams interpolated with the
  uniform distribution over the vocabulary (words, </s>, <unk>).

In backoff form the probability of every listed n-gram is the interpolated
one and the backoff weight of a context is exactly gamma(h), so each context's
distribution sums to one (tests/test_beam.py checks this by parsing the file back).
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

from components.models.text import normalise

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
NO_PROB = -99.0  # log10 "probability" of <s>, which is never predicted


def words_of(sentence: str) -> list[str]:
    """The default tokeniser: normalised, space separated words."""
    return normalise(sentence).split()


def vocabulary(sentences: Iterable[str], units: Callable[[str], list[str]] = words_of) -> list[str]:
    """The sorted distinct words of the (normalised) sentences."""
    return sorted({w for s in sentences for w in units(s)})


def _discounts(adjusted: dict[tuple[str, ...], int], fixed: float | None) -> tuple[float, float, float]:
    """(D1, D2, D3+) for one order from its count-of-counts; falls back when they are degenerate."""
    if fixed is not None:
        return (fixed, fixed, fixed)
    n = Counter(c for c in adjusted.values() if c <= 4)
    n1, n2, n3, n4 = (n.get(k, 0) for k in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) > 0:
        y = n1 / (n1 + 2 * n2)
        d = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        if all(0 < dk <= k for dk, k in zip(d, (1, 2, 3))):
            return d
    return (0.5, 1.0, 1.5)  # small corpora: plain-KN-like defaults


def _fmt(x: float) -> str:
    return f"{x:.7f}"


def build_arpa(
    sentences: Iterable[str],
    order: int = 3,
    path: str | os.PathLike = "lm.arpa",
    discount: float | None = None,
    units: Callable[[str], list[str]] = words_of,
) -> Path:
    """Estimate an ``order``-gram LM from sentences and write it as ARPA to ``path``.

    discount: None = modified Kneser-Ney discounts estimated per order; a float
    in (0, 1] = that absolute discount everywhere. units: sentence -> tokens
    (words by default; pass a character speller for a token-level LM).
    Empty sentences are skipped. Returns the path.
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if discount is not None and not 0 < discount <= 1:
        raise ValueError(f"discount must be in (0, 1], got {discount}")

    # Raw counts of the highest order, and of every order for <s>-initial n-grams.
    raw: list[Counter] = [Counter() for _ in range(order + 1)]
    for s in sentences:
        toks = units(s)
        if not toks:
            continue
        padded = [BOS, *toks, EOS]
        for k in range(1, order + 1):
            for i in range(len(padded) - k + 1):
                g = tuple(padded[i : i + k])
                if k == order or g[0] == BOS:
                    raw[k][g] += 1

    # Adjusted counts, highest order first: lower orders count distinct left extensions.
    adj: list[dict[tuple[str, ...], int]] = [{} for _ in range(order + 1)]
    adj[order] = dict(raw[order])
    for k in range(order - 1, 0, -1):
        left: Counter = Counter(g[1:] for g in adj[k + 1])
        a = dict(left)
        a.update(raw[k])  # <s>-initial n-grams keep their raw counts
        adj[k] = a
    adj[1].pop((BOS,), None)  # <s> is a context only, never predicted
    if not adj[1]:
        raise ValueError("no non-empty sentences to build a language model from")

    vocab = sorted({g[0] for g in adj[1]} | {EOS, UNK})
    d = [(0.0, 0.0, 0.0)] + [_discounts(adj[k], discount) for k in range(1, order + 1)]

    def disc(k: int, c: int) -> float:
        return min(d[k][min(c, 3) - 1], c)

    # Per-context totals and gamma (the backoff weight).
    gamma: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    total: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    for k in range(1, order + 1):
        tot: dict[tuple[str, ...], float] = defaultdict(float)
        dsum: dict[tuple[str, ...], float] = defaultdict(float)
        for g, c in adj[k].items():
            tot[g[:-1]] += c
            dsum[g[:-1]] += disc(k, c)
        total[k] = dict(tot)
        gamma[k] = {h: dsum[h] / tot[h] for h in tot}  # keyed by the (k-1)-gram context

    # Interpolated probabilities, lower orders first.
    prob: list[dict[tuple[str, ...], float]] = [{} for _ in range(order + 1)]
    uniform = 1.0 / len(vocab)
    g0 = gamma[1][()]
    prob[1] = {(w,): g0 * uniform for w in vocab}
    for g, c in adj[1].items():
        prob[1][g] += (c - disc(1, c)) / total[1][()]
    for k in range(2, order + 1):
        for g, c in adj[k].items():
            h = g[:-1]
            prob[k][g] = (c - disc(k, c)) / total[k][h] + gamma[k][h] * _backoff_prob(prob, gamma, g[1:])

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sections: list[list[str]] = []
    for k in range(1, order + 1):
        grams = dict(prob[k])
        if k == 1:
            grams[(BOS,)] = None  # type: ignore[assignment]
        lines = []
        for g in sorted(grams):
            p = grams[g]
            lp = NO_PROB if p is None else math.log10(p)
            line = f"{_fmt(lp)}\t{' '.join(g)}"
            if k < order:
                bow = gamma[k + 1].get(g)
                line += f"\t{_fmt(math.log10(bow) if bow is not None else 0.0)}"
            lines.append(line)
        sections.append(lines)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for k, lines in enumerate(sections, start=1):
            f.write(f"ngram {k}={len(lines)}\n")
        for k, lines in enumerate(sections, start=1):
            f.write(f"\n\\{k}-grams:\n")
            f.write("\n".join(lines))
            f.write("\n")
        f.write("\n\\end\\\n")
    return path


def _backoff_prob(prob: list[dict], gamma: list[dict], g: tuple[str, ...]) -> float:
    """p(g[-1] | g[:-1]) from the (already computed) lower orders, backing off as needed."""
    k = len(g)
    if g in prob[k]:
        return prob[k][g]
    if k == 1:
        return prob[1][(UNK,)]
    bow = gamma[k].get(g[:-1], 1.0)
    return bow * _backoff_prob(prob, gamma, g[1:])


# --- reading ARPA back (tests, diagnostics) ---------------------------------------------------


class ArpaLM:
    """A parsed ARPA file: log10 probabilities and backoffs, queried with backoff."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.header: dict[int, int] = {}
        self.logp: dict[tuple[str, ...], float] = {}
        self.logbow: dict[tuple[str, ...], float] = {}
        self.sections: dict[int, list[tuple[str, ...]]] = {}
        section = None
        with open(path, encoding="utf-8") as f:
            for raw_line in f:
                line = raw_line.strip()
                if not line:
                    continue
                if line == "\\data\\":
                    section = 0
                elif line == "\\end\\":
                    section = None
                elif line.startswith("\\") and line.endswith("-grams:"):
                    section = int(line[1:].split("-")[0])
                    self.sections[section] = []
                elif section == 0 and line.startswith("ngram "):
                    k, n = line[len("ngram ") :].split("=")
                    self.header[int(k)] = int(n)
                elif section:
                    parts = line.split("\t")
                    g = tuple(parts[1].split())
                    if len(g) != section:
                        raise ValueError(f"{path}: {section}-gram section holds {parts[1]!r}")
                    self.logp[g] = float(parts[0])
                    if len(parts) > 2:
                        self.logbow[g] = float(parts[2])
                    self.sections[section].append(g)
        self.order = max(self.header) if self.header else 0

    @property
    def vocab(self) -> list[str]:
        return [g[0] for g in self.sections.get(1, [])]

    def log10_prob(self, word: str, context: tuple[str, ...] = ()) -> float:
        """log10 p(word | context) with standard ARPA backoff; unknown words score as <unk>."""
        if (word,) not in self.logp:
            word = UNK
        context = tuple(context)[-(self.order - 1) :] if self.order > 1 else ()
        bow = 0.0
        while True:
            g = (*context, word)
            if g in self.logp:
                return bow + self.logp[g]
            bow += self.logbow.get(context, 0.0)
            context = context[1:]
