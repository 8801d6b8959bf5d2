"""Greedy decoding of a transformers Whisper decoder with a KV cache, guarded against loops.

    prompt (P,) --decoder step by step, argmax--> tokens until <|endoftext|>
    and, from the first step, each row's <|nospeech|> probability at <|startoftranscript|> (as OpenAI's
    decoder reads it): how sure Whisper is that nobody spoke

Guards (both off for the parity check against CTranslate2, on by default in the backbone):
- ``max_new``: a per-row token cap, from the clip's duration (a 2 s command has no business with 448 tokens);
- ``max_repeats``: stop a row as soon as its last n-gram (n <= 8) has come ``max_repeats + 1`` times in
  a row, and keep one copy ("no no no no no ..." -> "no"), the loop short commands fall into.
"""

from __future__ import annotations

import torch

from components.models.whisper.load import SpecialTokens

MAX_NGRAM = 8


def cut_repetition(ids: list[int], max_repeats: int) -> list[int] | None:
    """``ids`` with a trailing run of more than ``max_repeats`` copies of an n-gram cut to one copy, or None."""
    for n in range(1, MAX_NGRAM + 1):
        if len(ids) < n * (max_repeats + 1):
            break
        tail = ids[-n:]
        copies = 1
        while len(ids) >= n * (copies + 1) and ids[-n * (copies + 1) : len(ids) - n * copies] == tail:
            copies += 1
        if copies > max_repeats:
            return ids[: len(ids) - n * (copies - 1)]
    return None


@torch.no_grad()
def greedy_decode(
    whisper, encoder_states: torch.Tensor, tokens: SpecialTokens, max_new: list[int], max_repeats: int | None = None
) -> tuple[list[list[int]], list[float] | None]:
    """encoder_states (B, T', d) -> (B token lists (no prompt, no end of text), B <|nospeech|> probabilities,
    or None when the vocabulary has no such token).

    ``whisper``: a WhisperForConditionalGeneration; its decoder runs one token a step on the cache."""
    B, device = encoder_states.shape[0], encoder_states.device
    prompt = torch.tensor([tokens.prompt] * B, device=device)
    suppress = torch.tensor(tokens.suppress, dtype=torch.long, device=device)
    begin = torch.tensor(tokens.suppress_at_begin, dtype=torch.long, device=device)
    out: list[list[int]] = [[] for _ in range(B)]
    done = [n <= 0 for n in max_new]
    inputs, cache, no_speech = prompt, None, None
    for step in range(max(max_new, default=0)):
        if all(done):
            break
        dec = whisper.model.decoder(input_ids=inputs, encoder_hidden_states=encoder_states, past_key_values=cache, use_cache=True)
        cache = dec.past_key_values
        if step == 0 and tokens.no_speech is not None:  # the prompt's first position is <|startoftranscript|>
            no_speech = whisper.proj_out(dec.last_hidden_state[:, 0]).float().softmax(-1)[:, tokens.no_speech].tolist()
        logits = whisper.proj_out(dec.last_hidden_state[:, -1]).float()  # (B, V)
        logits[:, suppress] = float("-inf")
        if step == 0:
            logits[:, begin] = float("-inf")
        best = logits.argmax(-1).tolist()
        for b, token in enumerate(best):
            if done[b]:
                continue
            if token == tokens.eot:
                done[b] = True
                continue
            out[b].append(token)
            if max_repeats is not None and (cut := cut_repetition(out[b], max_repeats)) is not None:
                out[b], done[b] = cut, True
            elif len(out[b]) >= max_new[b]:
                done[b] = True
        inputs = torch.tensor([[tokens.eot if done[b] else best[b]] for b in range(B)], device=device)
    return out, no_speech
