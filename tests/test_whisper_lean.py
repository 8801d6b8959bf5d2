"""The plain-torch Whisper (components/models/whisper/lean.py) against transformers' on the same weights:
transformers' state dict loads as is; the encoder, a prompt pass and cached single-token steps give its
hidden states; greedy tokens on tiny.en over spoken commands are the same. WhisperASR on the lean engine
transcribes as on transformers' without importing it; every adapter method but prompt/prefix gives the same
outputs on it; the service runtime serves a Whisper cascade with task adapters on it."""

from __future__ import annotations

import pytest
import torch

from components.models.whisper.lean import LeanWhisper
from components.models.whisper.load import DEFAULT_MODEL, load_tokenizer, whisper_files
from tests.test_adapters import CASES
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


def test_the_lean_engine_transcribes_as_transformers_does(speech):  # noqa: F811
    """WhisperASR on engine "lean" (what `transcribe` and `predict` load for a bare Whisper): the same
    texts, tokens and no-speech probabilities as on transformers', and the decoder states the cascade's
    bridge reads; a clip longer than the window is cut and joined the same way."""
    from torch.nn.utils.rnn import pad_sequence

    from components.models.whisper.model import WhisperASR

    reference, lean = WhisperASR.pretrained().eval(), WhisperASR.pretrained(engine="lean").eval()
    assert lean.lean and not reference.lean
    waves = [speech[i]["noisy"] for i in range(len(speech))]
    waves.append(torch.cat(waves + waves[:2]))  # longer than a 5 s window: cut into windows
    wave, lengths = pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])
    for asr in (reference, lean):
        asr.configure(pad_to="longest")
        asr.config.context_seconds = 5.0
    with torch.inference_mode():
        want, got = reference(wave, lengths), lean(wave, lengths)
    assert got["texts"] == want["texts"] and got["tokens"] == want["tokens"] and all(want["texts"])
    assert got["no_speech_prob"] == pytest.approx(want["no_speech_prob"], abs=1e-4)
    assert got["words"] == want["words"]
    torch.testing.assert_close(got["states"], want["states"], rtol=1e-3, atol=1e-3)


def test_the_lean_engine_loads_without_importing_transformers():
    """The start-up contract of a one-command `transcribe`: neither loading tiny.en on the lean engine nor
    its tokenizer imports transformers (about 3 s)."""
    import subprocess
    import sys

    code = ("import sys\nfrom components.models.whisper.model import WhisperASR\nasr = WhisperASR.pretrained(engine='lean')\n"
            "assert asr.tokenizer.decode(asr.tokenizer.encode(' Wake me up at five pm.')) == ' Wake me up at five pm.'\n"
            "print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_the_tokenizer_decodes_as_transformers_does():
    """components/models/whisper/tokenizer.py against transformers' WhisperTokenizerFast on the same file:
    encoding, decoding (special tokens skipped) and the token strings."""
    import random

    from transformers import WhisperTokenizerFast

    path = whisper_files(DEFAULT_MODEL).tokenizer
    ours, theirs = load_tokenizer(path), WhisperTokenizerFast(tokenizer_file=str(path))
    text = " Set an alarm for 7:30, please! What's the weather in São Paulo?"
    assert ours.encode(text) == theirs(text, add_special_tokens=False).input_ids
    rng = random.Random(0)
    for _ in range(300):  # any ids, special ones (end of text, timestamps) among them
        ids = [rng.randrange(0, 50363) for _ in range(rng.randrange(1, 24))]
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True)
    assert ours.token_strings(50363) == theirs.convert_ids_to_tokens(list(range(50363)))
    assert ours.token_id("<|nocaptions|>") == 50361 and ours.token_id("<|nospeech|>") is None


@pytest.mark.parametrize("method", sorted(CASES))
def test_every_adapter_method_gives_the_same_outputs_on_the_lean_engine(method):
    """The service's path: a plain Whisper moved onto LeanWhisper (to_inference_engine), then an adapter
    attached by role. Every method but prompt and prefix tuning gives transformers' teacher-forced logits
    and greedy tokens with the same (perturbed) adapter weights; those two are refused with the reason."""
    import copy

    from components import adapters as A
    from tests.test_adapters import perturb
    from tests.test_adapters_whisper import ON_WHISPER, tiny_whisper

    tokenizer = load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer)
    reference = tiny_whisper(tokenizer)
    lean = copy.deepcopy(reference)
    assert lean.to_inference_engine() and lean.lean
    config = ON_WHISPER.get(method, CASES[method][0])()
    if method in ("prompt", "prefix"):
        with pytest.raises((ValueError, TypeError), match="role '@decoder' is not defined|holds none"):
            A.add_adapter(lean.whisper, config, name="x")
        return
    perturb(A.add_adapter(reference.whisper, config, name="x"), reference.whisper)
    A.add_adapter(lean.whisper, config, name="x")
    lean.whisper.load_state_dict(reference.whisper.state_dict(), strict=True)
    torch.manual_seed(1)
    wave, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    targets, target_lengths = reference.encode_targets(["set an alarm for five am", "hello"])
    with torch.inference_mode():
        want, got = reference(wave, lengths, targets, target_lengths), lean(wave, lengths, targets, target_lengths)
    torch.testing.assert_close(got["target_logits"], want["target_logits"], rtol=1e-4, atol=1e-4)
    assert got["tokens"] == want["tokens"]
    torch.testing.assert_close(got["states"], want["states"], rtol=1e-4, atol=1e-4)


def test_a_whisper_with_adapters_inside_stays_on_transformers():
    """to_inference_engine moves only plain weights: with an adapter already inside, nothing changes."""
    from components import adapters as A
    from tests.test_adapters_whisper import tiny_whisper

    asr = tiny_whisper(load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer))
    A.add_adapter(asr.whisper, A.LoraConfig(target_modules=["@attention"], r=4), name="x")
    assert not asr.to_inference_engine() and not asr.lean


def test_the_service_runtime_serves_a_whisper_cascade_on_the_lean_engine(speech, tmp_path):  # noqa: F811
    """TaskRuntime (what the bento runs) moves a Whisper cascade onto LeanWhisper before the task adapters
    (HRA over both stacks, two tasks made distinct) attach: every request, in a mixed-task batch, gets
    what transformers' engine gives it."""
    from components import adapters as A
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.multitask import ADAPTER, TaskAdapters
    from components.serving import TaskRuntime, write_service_model
    from tests.test_adapters_whisper import tiny_whisper

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    cascade = Cascade(None, tiny_whisper(load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer)), build_nlu(labels), labels).eval()
    A.add_adapter(cascade, A.HRAConfig(target_modules=["asr:@layer"], r=8), name=ADAPTER, tasks=["a", "b"])
    with torch.no_grad():
        for name, p in cascade.named_parameters():
            if ".tasks." in name:
                p.normal_(0, 0.5)
    bundle = TaskAdapters.export_adapter(cascade, tmp_path / "bundle", system="hra_test", backbone="test-backbone")
    A.remove_adapter(cascade, ADAPTER)
    model_dir = write_service_model(tmp_path / "model", cascade, bundle)
    waves = [speech[i]["noisy"] for i in range(len(speech))]
    tasks = ["a", "b", "b", "a"][: len(waves)]
    lean = TaskRuntime.load(model_dir, device="cpu")
    reference = TaskRuntime.load(model_dir, device="cpu", inference_engine=False)
    assert lean.inference_engine and lean.cascade.asr.lean and not reference.cascade.asr.lean
    assert lean.predict(waves, tasks) == reference.predict(waves, tasks)
