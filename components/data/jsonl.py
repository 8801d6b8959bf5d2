"""Reading JSON-lines files with errors that name the file and the line."""

from __future__ import annotations

import json
import os
from typing import Iterator


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for every non-blank line; raise ``error("<file>:<line>: ...")``
    on malformed JSON or a line that is not a JSON object."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise error(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj
