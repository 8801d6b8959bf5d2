"""Text <-> symbols for CTC."""

from __future__ import annotations

import re

import torch

# Index 0 is the CTC blank. SLURP transcripts are lower-case words with numbers
# spelled out; apostrophes ("mom's") and dots ("u. s.") are the only punctuation kept.
ALPHABET = " abcdefghijklmnopqrstuvwxyz'."
_KEEP = re.compile(r"[^ a-z'.]")


def normalise(text: str) -> str:
    """Lower-case, drop symbols outside ALPHABET, collapse spaces."""
    return " ".join(_KEEP.sub(" ", text.lower()).split())


class CharVocab:
    blank = 0

    def __init__(self, alphabet: str = ALPHABET) -> None:
        self.symbols = ["<blank>", *alphabet]
        self.index = {c: i for i, c in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index[c] for c in normalise(text)], dtype=torch.long)

    def decode(self, ids: list[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i != self.blank)
