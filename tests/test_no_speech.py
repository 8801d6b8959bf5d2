"""No answers to silence: the non-speech set, Whisper's <|nospeech|> probability and its gate, the cascade's
answer without a transcript or an intent, and the pre-trained tiny.en deciding on real audio."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from components.data.nonspeech import KINDS, LEVELS_DBFS, SAMPLE_RATE, nonspeech_set
from components.serving.local import wav_bytes
from tests.test_nas import speech  # noqa: F401  (the fixture: 4 SLURP rows spoken by espeak-ng, pink noise)
from tests.test_nas_whisper import tokenizer, whisper_cascade  # noqa: F401


def dbfs(wave: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(wave, dtype=np.float64))))


def test_nonspeech_set_is_reproducible_at_its_levels_and_lengths():
    talkers = [np.random.default_rng(i).standard_normal(SAMPLE_RATE).astype(np.float32) for i in range(8)]
    clips = nonspeech_set(2, seed=3, talkers=talkers)
    again = nonspeech_set(2, seed=3, talkers=talkers)
    assert [n for n, _ in clips] == [n for n, _ in again] and all(np.array_equal(a, b) for (_, a), (_, b) in zip(clips, again))
    assert len(clips) == 2 * (1 + (len(KINDS) - 1) * len(LEVELS_DBFS))
    for name, wave in clips:
        assert 1.0 <= len(wave) / SAMPLE_RATE <= 4.0 and wave.dtype == np.float32, name
        if name.startswith("silence"):
            assert not wave.any()
        else:
            level = float(name.split("@")[1].split("dBFS")[0])
            assert abs(dbfs(wave) - level) < 0.01, name
    assert not any(n.startswith("babble") for n, _ in nonspeech_set(1, seed=3))  # no talkers, no babble
    with pytest.raises(ValueError, match="babble needs at least 8"):
        nonspeech_set(1, seed=0, talkers=talkers[:3], kinds=("babble",))


def test_the_gate_empties_a_row_and_the_cascade_answers_no_intent(tokenizer, speech):  # noqa: F811
    """A tiny random Whisper: its probabilities are in (0, 1); at threshold 1 every row is heard, at a
    threshold under every probability none is, and the cascade then gives no transcript and no intent."""
    from components.data.dataset import collate

    cascade = whisper_cascade(tokenizer)
    batch = collate([speech[i] for i in range(3)])
    heard = cascade.transcribe(batch["noisy"], batch["lengths"])["asr"]
    probs = heard["no_speech_prob"]
    assert len(probs) == 3 and all(0 < p < 1 for p in probs) and heard["speech"] == [True] * 3
    cascade.asr.configure(no_speech_threshold=min(probs) / 2)
    gated = cascade.transcribe(batch["noisy"], batch["lengths"])["asr"]
    assert gated["speech"] == [False] * 3 and gated["words"] == [[]] * 3 and gated["texts"] == [""] * 3
    assert gated["no_speech_prob"] == pytest.approx(probs)
    for mode in ("e2e", "text"):
        from components.models.nlu import load_tokenizer

        for pred, transcript in cascade.predict(batch["noisy"], batch["lengths"], batch["meta"], mode=mode, tokenizer=load_tokenizer()):
            assert pred.no_speech and transcript == "" and pred.entities == ()
    cascade.asr.configure(no_speech_threshold=1.0)
    assert cascade.transcribe(batch["noisy"], batch["lengths"])["asr"]["speech"] == [True] * 3
    with pytest.raises(ValueError, match="no_speech_threshold must be in"):
        cascade.asr.configure(no_speech_threshold=0.0)


@pytest.fixture(scope="module")
def whisper():
    from components.models.whisper.model import WhisperASR

    return WhisperASR.pretrained(context_seconds=10.0).eval()


def test_pretrained_whisper_hears_nobody_in_silence_noise_and_tones_and_hears_commands(whisper, speech):  # noqa: F811
    """tiny.en from the wheel, at the serving default: silence, hiss, pink noise, hum, a tone and clicks get no words;
    four SLURP commands spoken by espeak-ng over pink noise at 10 dB keep theirs."""
    from components.models.whisper.model import NO_SPEECH_THRESHOLD

    quiet = nonspeech_set(1, seed=5, kinds=("silence", "hiss", "pink", "hum", "tone", "clicks"))  # every level
    commands = [speech[i]["noisy"] for i in range(len(speech))]
    waves = [torch.from_numpy(w) for _, w in quiet] + commands
    batch, lengths = pad_sequence(waves, batch_first=True), torch.tensor([len(w) for w in waves])
    try:
        whisper.configure(no_speech_threshold=NO_SPEECH_THRESHOLD)
        with torch.inference_mode():
            out = whisper(batch, lengths)
    finally:
        whisper.configure(no_speech_threshold=None)
    probs = dict(zip([n for n, _ in quiet] + [f"command{i}" for i in range(len(commands))], out["no_speech_prob"]))
    assert out["speech"] == [False] * len(quiet) + [True] * len(commands), probs
    assert out["texts"][: len(quiet)] == [""] * len(quiet) and all(out["texts"][len(quiet) :])


def test_mean_logprob_is_the_decoders_own_log_probability_of_its_1_best(whisper, speech):  # noqa: F811
    """mean_logprob from the teacher-forced states = the mean over the 1-best and the end of text of
    log_softmax(transformers' forward's logits on the encoder states), with greedy decoding's suppressed tokens kept out."""
    commands = [speech[i]["noisy"] for i in range(2)]
    with torch.inference_mode():
        out = whisper(pad_sequence(commands, batch_first=True), torch.tensor([len(w) for w in commands]))
        scores = whisper.mean_logprob(out["states"], out["tokens"])
        prompt, tokens = whisper.tokens.prompt, whisper.tokens
        for b, best in enumerate(out["tokens"]):
            ids = torch.tensor([prompt + best])
            logits = whisper.whisper(encoder_outputs=(out["encoder_states"][b : b + 1],), decoder_input_ids=ids).logits[0, len(prompt) - 1 :].float()
            logits[:, tokens.suppress] = float("-inf")
            logits[0, tokens.suppress_at_begin] = float("-inf")
            expected = logits.log_softmax(-1).gather(1, torch.tensor([*best, tokens.eot])[:, None]).mean()
            assert best and scores[b] == pytest.approx(float(expected), abs=1e-3)
            assert -2.0 < scores[b] < 0  # greedy picks each row's most likely token: spoken commands score near 0


@pytest.fixture(scope="module")
def whisper_server(whisper, tmp_path_factory):
    """A real `bentoml serve` on 127.0.0.1 of tiny.en with one task's HRA adapter (at zero: tiny.en's own
    decisions), at the service's default no-speech threshold."""
    import copy
    import shutil

    import bentoml

    from components import adapters as A
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.multitask import ADAPTER, TaskAdapters
    from components.serving import write_service_model
    from components.serving.local import free_port, serve_locally

    labels = NluLabels.from_label_set()
    cascade = Cascade(None, copy.deepcopy(whisper), build_nlu(labels), labels).eval()
    A.add_adapter(cascade, A.HRAConfig(target_modules=["asr:@layer"], r=8), name=ADAPTER, tasks=["alice"])
    root = tmp_path_factory.mktemp("whisper_service")
    bundle = TaskAdapters.export_adapter(cascade, root / "bundle", system="hra_test", backbone="whisper-tiny.en")
    A.remove_adapter(cascade, ADAPTER)
    model_dir = write_service_model(root / "model", cascade, bundle)
    with bentoml.models.create("cascadapt_slu_no_speech_test") as model:
        shutil.copytree(model_dir, model.path, dirs_exist_ok=True)
    with serve_locally("components.serving.service:CascadeSLU", free_port(), args={"model": str(model.tag), "threads": 1}, log=root / "serve.log") as client:
        yield client


def test_the_service_answers_silence_and_noise_with_speech_false_and_no_intent(whisper_server, speech):  # noqa: F811
    from components.models.whisper.model import NO_SPEECH_THRESHOLD

    assert whisper_server.tasks()["no_speech_threshold"] == NO_SPEECH_THRESHOLD
    for name, wave in nonspeech_set(1, seed=7, kinds=("silence", "hiss", "hum")):
        status, body = whisper_server.post_audio(wav_bytes(wave), "alice")
        assert status == 200, body
        assert body["speech"] is False and body["transcript"] == "" and body["intent"] is None and body["scenario"] is None and body["entities"] == [], (name, body)
    status, body = whisper_server.post_audio(wav_bytes(speech[0]["noisy"].numpy()), "alice")
    assert status == 200 and body["speech"] is True and body["transcript"] and body["intent"], body
