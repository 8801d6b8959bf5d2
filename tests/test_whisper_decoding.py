"""Greedy decoding's speed-ups keep its results: the int8 shortlist gives the fp32 argmax, and rows that
leave the batch early (with their per-row task ids) get what they get decoded alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from components import adapters as A
from components.models.whisper.decode import greedy_decode
from components.models.whisper.load import load_whisper
from components.models.whisper.vocabulary import GreedyVocabulary
from tests.test_adapters import CASES, perturb
from tests.test_adapters_whisper import ON_WHISPER, tiny_whisper, tokenizer  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def tiny_en():
    whisper, _, tokens, _ = load_whisper()
    return whisper.eval(), tokens


def _hidden(norm: nn.LayerNorm, rows: int, seed: int) -> torch.Tensor:
    """Decoder-like states: the final LayerNorm of random activations with a few large dimensions."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, norm.normalized_shape[0], generator=g)
    x[:, :4] *= 20
    with torch.no_grad():
        return norm(x)


def _projection(whisper) -> tuple[nn.LayerNorm, nn.Linear]:
    """tiny.en's final decoder norm, and a copy of its output projection for a test to edit."""
    norm = whisper.model.decoder.layer_norm
    proj = nn.Linear(norm.normalized_shape[0], whisper.config.vocab_size, bias=False)
    proj.weight.data = whisper.proj_out.weight.detach().clone()
    return norm, proj


def test_shortlist_gives_the_fp32_argmax_even_on_near_ties(tiny_en):
    whisper, tokens = tiny_en
    norm, proj = _projection(whisper)
    mask = torch.zeros(whisper.config.vocab_size)
    mask[tokens.suppress] = float("-inf")
    candidates = _hidden(norm, 256, seed=0)
    first_of_best = {}  # rows with a best token of their own, so that each near tie below touches one row
    for row, token in enumerate((proj(candidates) + mask).argmax(-1).tolist()):
        first_of_best.setdefault(token, row)
    assert len(first_of_best) >= 16
    h = candidates[sorted(first_of_best.values())[:16]]
    # near ties far below int8's resolution: each row's best token gets a twin a hair better or worse
    best = (proj(h) + mask).argmax(-1)
    twins = torch.arange(16) * 997 + 1000  # unsuppressed tokens, none of them a row's best
    assert not set(twins.tolist()) & set(best.tolist()) and bool((mask[twins] == 0).all())
    with torch.no_grad():
        for row, (b, t) in enumerate(zip(best.tolist(), twins.tolist())):
            sign = 1 if row % 2 else -1  # odd rows: the twin wins by ~1e-4 of a logit; even rows: it loses
            proj.weight[t] = proj.weight[b] + sign * 1e-4 * h[row] / h[row].pow(2).sum()
    vocabulary = GreedyVocabulary(int8_after=0)  # the int8 shortlist from the first call
    expected = (proj(h) + mask).argmax(-1)
    got = vocabulary.argmax(proj, h, mask, norm)
    assert vocabulary._key is not None, "the int8 shortlist did not run"
    assert torch.equal(got, expected)
    assert torch.equal(got[1::2], twins[1::2]) and torch.equal(got[::2], best[::2])


def test_shortlist_follows_weights_changed_in_place(tiny_en):
    whisper, _ = tiny_en
    norm, proj = _projection(whisper)
    mask = torch.zeros(whisper.config.vocab_size)
    h = _hidden(norm, 4, seed=1)
    vocabulary = GreedyVocabulary(int8_after=0)  # the int8 shortlist from the first call
    first = vocabulary.argmax(proj, h, mask, norm)
    with torch.no_grad():  # an optimizer step would do this: every row now prefers token 7
        proj.weight[7] += 10 * h.mean(0) / h.mean(0).pow(2).sum()
    assert torch.equal(vocabulary.argmax(proj, h, mask, norm), (proj(h) + mask).argmax(-1))
    assert not torch.equal(first, (proj(h) + mask).argmax(-1))


def test_a_wrapped_projection_is_used_as_is(tiny_en):
    whisper, _ = tiny_en
    linear = nn.Linear(384, whisper.config.vocab_size, bias=False)
    wrapped = nn.Sequential(linear, nn.Tanh())  # e.g. an adapter around proj_out: no folding into int8
    h, mask = torch.randn(3, 384), torch.zeros(whisper.config.vocab_size)
    vocabulary = GreedyVocabulary(int8_after=0)  # the int8 shortlist from the first call
    assert torch.equal(vocabulary.argmax(wrapped, h, mask), torch.tanh(linear(h)).argmax(-1))
    assert vocabulary._key is None


# every method on transformers' Whisper; on the lean engine, all but prompt and prefix tuning (refused there)
ENGINE_CASES = [(m, "transformers") for m in sorted(CASES)] + [(m, "lean") for m in sorted(CASES) if m not in ("prompt", "prefix")]


@pytest.mark.parametrize("method,engine", ENGINE_CASES)
def test_rows_leave_the_batch_and_keep_their_own_task(method, engine, tokenizer):  # noqa: F811
    """A mixed-task batch decodes each row as it decodes alone, with its task's adapter in every cached step
    (transformers' decoder cache, and the lean engine's static one)."""
    asr = tiny_whisper(tokenizer)
    assert engine == "transformers" or asr.to_inference_engine()
    adapter = A.add_adapter(asr.whisper, ON_WHISPER.get(method, CASES[method][0])(), name="x", tasks=["a", "b"])
    perturb(adapter, asr.whisper)
    torch.manual_seed(2)
    wave, lengths = torch.randn(4, 16000) * 0.1, torch.tensor([16000, 9000, 12000, 16000])
    max_new, tasks = [2, 9, 5, 14], ["a", "b", "b", "a"]
    adapter.set_task(tasks)
    ids = adapter.router.current.clone()
    with torch.no_grad():  # the encoder pass leaves state the decoder reads (HRA's pooled carry)
        batched, no_speech = greedy_decode(asr.whisper, asr.encode(wave, lengths), asr.tokens, max_new)
    assert torch.equal(adapter.router.current, ids), "the batch's task ids are restored"
    assert len({len(t) for t in batched}) > 1, "rows must finish at different steps for this test to mean anything"
    for row, task in enumerate(tasks):
        adapter.set_task(task)
        with torch.no_grad():
            enc = asr.encode(wave[row : row + 1], lengths[row : row + 1])
            alone, alone_no_speech = greedy_decode(asr.whisper, enc, asr.tokens, max_new[row : row + 1])
        assert alone[0] == batched[row], f"row {row} ({task})"
        if no_speech is not None:
            assert alone_no_speech[0] == pytest.approx(no_speech[row], abs=1e-5)


def test_the_int8_copy_is_made_only_after_int8_after_calls(tiny_en):
    """A one-command process never wins back the int8 copy's cost: the first calls run the fp32 projection."""
    whisper, _ = tiny_en
    norm, proj = _projection(whisper)
    h, mask = _hidden(norm, 2, seed=3), torch.zeros(whisper.config.vocab_size)
    vocabulary = GreedyVocabulary(int8_after=2)
    expected = (proj(h) + mask).argmax(-1)
    for _ in range(2):
        assert torch.equal(vocabulary.argmax(proj, h, mask, norm), expected) and vocabulary._key is None
    assert torch.equal(vocabulary.argmax(proj, h, mask, norm), expected) and vocabulary._key is not None
