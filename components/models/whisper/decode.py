"""Greedy decoding of a transformers Whisper decoder with a KV cache, guarded against loops.

    prompt (P,) --decoder step by step, argmax--> tokens until <|endoftext|>
    and, from the first step, each row's <|nospeech|> probability at <|startoftranscript|> (as OpenAI's
    decoder reads it): how sure Whisper is that nobody spoke

Each step: the decoder on the KV cache for the rows still running (finished rows leave the batch), then
the argmax over the vocabulary, from an int8 shortlist rescored in fp32 (vocabulary.py): the fp32 argmax.

Guards (both off for the parity check against CTranslate2, on by default in the backbone):
- ``max_new``: a per-row token cap, from the clip's duration (a 2 s command has no business with 448 tokens);
- ``max_repeats``: stop a row as soon as its last n-gram (n <= 8) has come ``max_repeats + 1`` times in
  a row, and keep one copy ("no no no no no ..." -> "no"), the loop short commands fall into.
"""

from __future__ import annotations

import torch

from components.adapters.inject import applied_methods
from components.models.whisper.load import SpecialTokens
from components.models.whisper.vocabulary import GreedyVocabulary

MAX_NGRAM = 8
# narrow the batch once this fraction of its rows is still running: each narrowing copies the KV cache
# (the cross-attention's is B x T' frames a layer), so it is done a few times a decode, not per finished row
NARROW_AT = 0.75


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


class TransformersSteps:
    """transformers' Whisper decoder, one call a step on its own KV cache; ``keep`` narrows the batch."""

    def __init__(self, whisper, encoder_states: torch.Tensor) -> None:
        self.whisper, self.states, self.cache = whisper, encoder_states, None

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs (B, n) -> hidden (B, n, d) after the decoder's final norm"""
        dec = self.whisper.model.decoder(input_ids=inputs, encoder_hidden_states=self.states, past_key_values=self.cache, use_cache=True)
        self.cache = dec.past_key_values
        return dec.last_hidden_state

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.states = self.states.index_select(0, rows)


def decoder_steps(whisper, encoder_states: torch.Tensor, max_len: int):
    """The step-by-step decoder of ``whisper``: its own (LeanWhisper's static cache), else transformers'."""
    own = getattr(whisper, "decoder_steps", None)
    return own(encoder_states, max_len) if own else TransformersSteps(whisper, encoder_states)


@torch.no_grad()
def greedy_decode(
    whisper,
    encoder_states: torch.Tensor,
    tokens: SpecialTokens,
    max_new: list[int],
    max_repeats: int | None = None,
    vocabulary: GreedyVocabulary | None = None,
) -> tuple[list[list[int]], list[float] | None]:
    """encoder_states (B, T', d) -> (B token lists (no prompt, no end of text), B <|nospeech|> probabilities,
    or None when the vocabulary has no such token).

    ``whisper``: a WhisperForConditionalGeneration or a LeanWhisper; its decoder runs one token a step on the cache. Rows
    that have finished leave the batch (their cache, encoder states and adapter state, e.g. task ids, with
    them) once they are a quarter of it; until then they run on, their tokens ignored. ``vocabulary``: the
    argmax of the logits (the caller's, to keep its int8 copy between calls; a fresh one otherwise)."""
    B, device = encoder_states.shape[0], encoder_states.device
    vocabulary = vocabulary or GreedyVocabulary()
    mask = torch.zeros(whisper.proj_out.out_features, device=device)  # (V,) 0, or -inf for a suppressed token
    mask[tokens.suppress] = float("-inf")
    mask_first = mask.clone()
    mask_first[tokens.suppress_at_begin] = float("-inf")
    out: list[list[int]] = [[] for _ in range(B)]
    done = [n <= 0 for n in max_new]
    rows = list(range(B))  # the original row of each row of the running batch
    adapters = applied_methods(whisper)  # their per-row state (a mixed batch's task ids) narrows with the batch
    saved = [method.batch_state() for method in adapters]
    inputs, no_speech = torch.tensor([tokens.prompt] * B, device=device), None
    decoder = decoder_steps(whisper, encoder_states, len(tokens.prompt) + max(max_new, default=0))
    try:
        for step in range(max(max_new, default=0)):
            live = [i for i, b in enumerate(rows) if not done[b]]
            if not live:
                break
            if step > 0 and len(live) <= NARROW_AT * len(rows):
                keep = torch.tensor(live, device=device)
                decoder.keep(keep)
                inputs = inputs.index_select(0, keep)
                for method in adapters:
                    method.keep_rows(keep)
                rows = [rows[i] for i in live]
            hidden = decoder(inputs)
            if step == 0 and tokens.no_speech is not None:  # the prompt's first position is <|startoftranscript|>
                no_speech = whisper.proj_out(hidden[:, 0]).float().softmax(-1)[:, tokens.no_speech].tolist()
            best = vocabulary.argmax(whisper.proj_out, hidden[:, -1], mask_first if step == 0 else mask, whisper.model.decoder.layer_norm).tolist()
            for b, token in zip(rows, best):
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
            inputs = torch.tensor(best, device=device)[:, None]
    finally:
        for method, state in zip(adapters, saved):
            method.set_batch_state(state)
    return out, no_speech
