"""Whisper's tokenizer (a byte-level BPE in tokenizer.json) on the ``tokenizers`` library.

What decoding and the cascade need (text -> ids, ids -> text, the token strings, special ids), without
importing transformers: its WhisperTokenizerFast is the same backend, and importing it costs ~3 s of a
one-command start-up (README "Serving"). ``decode`` skips special tokens and matches
WhisperTokenizerFast.decode(ids, skip_special_tokens=True) (tests/test_whisper_lean.py).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer


class WhisperTokenizer:
    def __init__(self, backend: Tokenizer) -> None:
        self.backend = backend

    @classmethod
    def from_file(cls, path: str | Path) -> "WhisperTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    def encode(self, text: str) -> list[int]:
        """text -> token ids, no special tokens"""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """token ids -> text, special tokens (<|endoftext|>, timestamps, ...) left out"""
        return self.backend.decode(ids, skip_special_tokens=True)

    def token_id(self, token: str) -> int | None:
        """The id of a token string (e.g. "<|endoftext|>"), or None if the vocabulary has no such token."""
        return self.backend.token_to_id(token)

    def token_strings(self, size: int) -> list[str]:
        """The strings of ids [0, size): "Ġ" marks a leading space."""
        return [self.backend.id_to_token(i) or "" for i in range(size)]

    def save(self, path: str | Path) -> None:
        self.backend.save(str(path))

    def to_transformers(self):
        """The same tokenizer as transformers' WhisperTokenizerFast (for a Hugging Face export)."""
        from transformers import WhisperTokenizerFast

        return WhisperTokenizerFast(tokenizer_object=self.backend)
