"""The plain-torch Whisper (components/models/whisper/lean.py) against transformers' on the same weights:
transformers' state dict loads as is; the encoder, a prompt pass and cached single-token steps give its
hidden states; greedy tokens on tiny.en over spoken commands are the same."""

from __future__ import annotations

import pytest
import torch

from components.models.whisper.lean import LeanWhisper
from tests.test_adapters_whisper import DIMS
from tests.test_nas import speech  # noqa: F401  (the fixture: 4 SLURP rows spoken by espeak-ng, pink noise)


def lean_copy(whisper) -> LeanWhisper:
    """A LeanWhisper holding ``whisper``'s (a transformers WhisperForConditionalGeneration) weights."""
    lean = LeanWhisper({k: getattr(whisper.config, k) for k in DIMS}).eval()
    lean.load_state_dict(whisper.state_dict(), strict=True)
    return lean


def test_state_dict_loads_and_every_pass_matches_transformers():
    from transformers import WhisperForConditionalGeneration

    from components.models.whisper.load import hf_config

    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(hf_config(DIMS)).eval()
    lean = lean_copy(hf)
    assert lean.proj_out.weight is lean.decoder.embed_tokens.weight  # tied, as in every Whisper
    features = torch.randn(2, DIMS["num_mel_bins"], 2 * DIMS["max_source_positions"])
    tokens = torch.randint(0, DIMS["vocab_size"], (2, 7))
    with torch.no_grad():
        states = lean.encoder(features)
        torch.testing.assert_close(states, hf.model.encoder(features).last_hidden_state, rtol=1e-4, atol=1e-4)
        full = hf.model.decoder(input_ids=tokens, encoder_hidden_states=states).last_hidden_state  # (2, 7, d), causal
        cache = lean.decoder.cache(states, max_len=10)
        steps = [lean.decoder(tokens[:, :4], cache)] + [lean.decoder(tokens[:, i : i + 1], cache) for i in range(4, 7)]
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-4, atol=1e-4)
        cache.keep(torch.tensor([1]))  # the second row alone goes on
        torch.testing.assert_close(lean.decoder(tokens[1:, :1], cache), hf.model.decoder(input_ids=torch.cat([tokens[1:], tokens[1:, :1]], 1), encoder_hidden_states=states[1:]).last_hidden_state[:, -1:], rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="cache of 10 positions is full"):
            lean.decoder(tokens[1:, :3], cache)


def test_greedy_decoding_on_tiny_en_matches_transformers(speech):  # noqa: F811
    """tiny.en from the wheel on 4 spoken commands, batched: greedy_decode (rows leaving the batch, the
    loop guards, the int8 vocabulary shortlist) on the lean decoder gives transformers' tokens and
    no-speech probabilities."""
    from torch.nn.utils.rnn import pad_sequence

    from components.models.whisper.decode import greedy_decode
    from components.models.whisper.model import WhisperASR

    asr = WhisperASR.pretrained(context_seconds=10.0).eval()
    lean = lean_copy(asr.whisper)
    waves = [speech[i]["noisy"] for i in range(len(speech))]
    wave, lengths = pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])
    with torch.inference_mode():
        reference = asr(wave, lengths)
        states = lean.encoder(asr.log_mel(wave, asr.frames(lengths)))
        torch.testing.assert_close(states, reference["encoder_states"], rtol=1e-4, atol=1e-4)
        tokens, no_speech = greedy_decode(lean, states, asr.tokens, asr.max_new_tokens(lengths), asr.config.max_repeats)
    assert all(reference["tokens"]) and tokens == reference["tokens"], [asr.tokenizer.decode(t) for t in tokens]
    assert no_speech == pytest.approx(reference["no_speech_prob"], abs=1e-4)
