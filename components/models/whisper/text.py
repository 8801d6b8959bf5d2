"""Whisper's written English -> SLURP's spoken style, and the library normaliser for zero-shot scoring.

SLURP transcripts are lower case, without punctuation, with numbers spelled out:
"wake me up at five am". Whisper writes "Wake me up at 5 a.m.". ``slurp_style`` maps the
second onto the first (numbers, times, ordinals, %, $, a.m./p.m., &); apostrophes stay
("mom's", "don't"), as SLURP keeps them. ``english_normalized`` is transformers' Whisper
English normaliser (both sides of a comparison go through it; it writes numbers as digits).
"""

from __future__ import annotations

import re

_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_SCALES = [(10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred")]


def number_words(n: int) -> str:
    """5 -> 'five', 21 -> 'twenty one', 1999 -> 'one thousand nine hundred ninety nine'."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for value, word in _SCALES:
        if n >= value:
            rest = n % value
            return f"{number_words(n // value)} {word}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError(n)


def ordinal_words(n: int) -> str:
    """3 -> 'third', 21 -> 'twenty first', 40 -> 'fortieth'."""
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL:
        words[-1] = _ORDINAL[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _year_or_number(digits: str) -> str:
    n = int(digits)
    if len(digits) == 4 and 1100 <= n <= 2099 and n % 100 != 0 and not 2000 <= n <= 2009:
        return f"{number_words(n // 100)} {number_words(n % 100) if n % 100 >= 10 else 'oh ' + number_words(n % 100)}"  # 1999, 2019
    return number_words(n)


def _plural(words: str) -> str:
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _time(match: re.Match) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return number_words(hours)
    return f"{number_words(hours)} {number_words(minutes) if minutes >= 10 else 'oh ' + number_words(minutes)}"


_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"\b(\d{1,2}):(\d{2})\b"), _time),
    (re.compile(r"\b([ap])\.?\s?m\b\.?", re.I), lambda m: m.group(1).lower() + "m"),
    (re.compile(r"\$(\d+)(?:\.(\d{2}))?"), lambda m: f"{number_words(int(m.group(1)))} dollars" + (f" {number_words(int(m.group(2)))} cents" if m.group(2) and int(m.group(2)) else "")),
    (re.compile(r"(\d+)\s?%"), lambda m: f"{number_words(int(m.group(1)))} percent"),
    (re.compile(r"(\d+)\s?°\s?([cf])?\b", re.I), lambda m: f"{number_words(int(m.group(1)))} degrees" + ({"c": " celsius", "f": " fahrenheit"}.get((m.group(2) or "").lower(), ""))),
    (re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.I), lambda m: ordinal_words(int(m.group(1)))),
    (re.compile(r"\b(\d+)'?s\b"), lambda m: _plural(_year_or_number(m.group(1)))),  # the 80s -> the eighties
    (re.compile(r"\b(\d+)\.(\d+)\b"), lambda m: f"{number_words(int(m.group(1)))} point {' '.join(_ONES[int(d)] for d in m.group(2))}"),
    (re.compile(r"(?<=\d),(?=\d{3}\b)"), ""),
    (re.compile(r"\d+"), lambda m: _year_or_number(m.group(0))),
    (re.compile(r"&"), " and "),
    (re.compile(r"\+"), " plus "),
]
_DROP = re.compile(r"[^a-z' ]+")


def slurp_style(text: str) -> str:
    """'Wake me up at 5 a.m.' -> 'wake me up at five am'; 'It's 25%.' -> "it's twenty five percent"."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    text = _DROP.sub(" ", text.lower().replace("’", "'"))
    words = [w.strip("'") if w.startswith("'") and not re.match(r"^'(s|re|ll|ve|d|m|t)$", w) else w for w in text.split()]
    return " ".join(w for w in words if w)


_ENGLISH = None


def english_normalized(text: str) -> str:
    """transformers' Whisper EnglishTextNormalizer (without the British->American spelling table,
    which ships with hub tokenizers only): '5 a.m.' -> '5 a m', 'twenty-five percent' -> '25%'."""
    global _ENGLISH
    if _ENGLISH is None:
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        _ENGLISH = EnglishTextNormalizer({})
    return _ENGLISH(text)


def plain_normalized(text: str) -> str:
    """Lower case, punctuation stripped (apostrophes kept): the plain WER convention."""
    return " ".join(_DROP.sub(" ", text.lower().replace("’", "'")).split())


TEXT_STYLES = {"raw": lambda t: t.strip(), "slurp": slurp_style}
