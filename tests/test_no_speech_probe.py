"""The no-speech probe: statistics blind to the level, calibration at the allowed share of commands,
real commands told from real non-speech, and a cascade deciding with it, saved and loaded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pad_sequence

from components.data.nonspeech import nonspeech_set
from components.models.no_speech_probe import NoSpeechProbe
from components.no_speech import fit_no_speech_probe
from tests.test_nas_whisper import tokenizer, whisper_cascade  # noqa: F401

THRESHOLD = 0.6


@pytest.fixture(scope="module")
def commands(slurp_jsonl, tmp_path_factory) -> list[np.ndarray]:
    """28 SLURP commands, spoken by espeak-ng and flite (alternately), in white, pink or babble noise at 5-20 dB."""
    from components.data.corpus import CorpusConfig, build_corpus
    from components.data.dataset import SpeechDataset
    from components.data.manifest import read_manifest
    from components.data.slurp import read_slurp
    from components.data.speakers import Speaker

    out = tmp_path_factory.mktemp("commands")
    speakers = [Speaker("espeak-ng", "en-us"), Speaker("flite", "slt")]
    manifest = build_corpus(read_slurp(slurp_jsonl)[:28], out, CorpusConfig(speakers, snrs=[5.0, 10.0, 20.0], workers=2), progress=False)
    ds = SpeechDataset(read_manifest(manifest), out)
    return [ds[i]["noisy"].numpy() for i in range(len(ds))]


def batch(waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = [torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in waves]
    return pad_sequence(tensors, batch_first=True), torch.tensor([len(w) for w in tensors])


def test_statistics_depend_neither_on_the_level_nor_on_the_padding(commands):
    probe = NoSpeechProbe()
    wave = torch.from_numpy(commands[0])[None]
    n = torch.tensor([wave.shape[1]])
    alone = probe.statistics(wave, n)
    assert alone.shape == (1, 4 * 80) and alone.abs().sum() > 0
    for gain in (0.05, 4.0):  # -26 dB and +12 dB
        assert torch.allclose(probe.statistics(wave * gain, n), alone, atol=5e-3), gain  # the 1e-10 power floor: the top bins of a quiet clip
    padded = torch.cat([wave, torch.zeros(1, 48000)], dim=1)
    assert torch.allclose(probe.statistics(padded, n), alone, atol=1e-5)
    silence = probe.statistics(torch.zeros(1, 16000), torch.tensor([16000]))
    assert torch.count_nonzero(silence) == 0  # nothing moves


@pytest.mark.parametrize("max_false_rejection", [0.0, 0.05, 0.1, 0.25, 0.5])
def test_calibration_rejects_exactly_the_allowed_share_of_commands(max_false_rejection):
    generator = torch.Generator().manual_seed(0)
    speech, nonspeech = torch.randn(200, 8, generator=generator), torch.randn(100, 8, generator=generator) + 1.0
    probe = NoSpeechProbe.fit(speech[:100], nonspeech, max_iter=50)
    held_out = speech[100:]
    probe.calibrate(held_out, max_false_rejection, THRESHOLD)
    assert int((probe.probability(held_out) > THRESHOLD).sum()) == math.floor(max_false_rejection * len(held_out))


def test_fit_refuses_too_few_clips():
    with pytest.raises(ValueError, match="at least 2 clips of each kind"):
        NoSpeechProbe.fit(torch.randn(1, 8), torch.randn(5, 8))
    with pytest.raises(ValueError, match="needs held-out commands"):
        fit_no_speech_probe([np.zeros(16000, np.float32)] * 2, [np.ones(16000, np.float32)] * 2, [], threshold=THRESHOLD)


@pytest.fixture(scope="module")
def fitted(commands):
    """Fitted on 16 commands against non-speech of seed 0 (no babble: no talkers), calibrated on 4 more."""
    nonspeech = [w for _, w in nonspeech_set(2, seed=0)]
    probe, report = fit_no_speech_probe(commands[:16], nonspeech, commands[16:20], max_false_rejection=0.0, threshold=THRESHOLD)
    return probe, report


def test_the_probe_ranks_held_out_commands_at_any_level_under_fresh_nonspeech(fitted, commands):
    probe, report = fitted
    assert report["calibration_false_rejections"] == 0 and report["commands"] == 16 and report["calibration_commands"] == 4
    held_out = commands[20:]
    named = nonspeech_set(1, seed=1)
    with torch.no_grad():
        heard = probe(*batch(held_out))
        quiet = probe(*batch([w * 0.05 for w in held_out]))
        nobody = probe(*batch([w for _, w in named]))
    assert torch.allclose(quiet, heard, atol=1e-2)  # 26 dB quieter, the same decision
    assert heard.max() < nobody.min(), (heard, nobody)  # every held-out command below every non-speech clip
    answered = [name for (name, _), p in zip(named, nobody.tolist()) if p <= THRESHOLD]
    assert not answered, dict(zip([n for n, _ in named], nobody.tolist()))
    assert int((heard > THRESHOLD).sum()) <= 1  # 16 commands fit it, 4 calibrated it: a held-out one may sit near the cut


def test_a_cascade_decides_with_its_probe_and_keeps_it_when_saved(fitted, commands, tokenizer, tmp_path):  # noqa: F811
    """A tiny Whisper cascade: with the probe set, the gate reads the probe's probability of the raw input
    (not <|nospeech|>'s): commands keep their words, non-speech gets none; the saved cascade decides alike."""
    from components.cascade_files import load_cascade, save_cascade

    probe, _ = fitted
    cascade = whisper_cascade(tokenizer)
    waves = commands[20:24] + [w for _, w in nonspeech_set(1, seed=2, kinds=("silence", "hiss", "hum", "chord"))]
    wave, lengths = batch(waves)
    cascade.set_no_speech_probe(probe)
    cascade.asr.configure(no_speech_threshold=THRESHOLD)
    with torch.no_grad():
        out = cascade.transcribe(wave, lengths)["asr"]
        expected = probe(wave, lengths).tolist()
    assert out["no_speech_prob"] == pytest.approx(expected)
    assert out["speech"] == [p <= THRESHOLD for p in expected]
    assert sum(out["speech"][:4]) >= 3 and not any(out["speech"][4:])  # the commands (one may sit near the cut); no non-speech
    assert all(words == [] for words, spoken in zip(out["words"], out["speech"]) if not spoken)
    save_cascade(cascade, tmp_path / "cascade")
    loaded = load_cascade(tmp_path / "cascade")
    assert loaded.no_speech_probe is not None
    loaded.asr.configure(no_speech_threshold=THRESHOLD)
    with torch.no_grad():
        again = loaded.transcribe(wave, lengths)["asr"]
    assert again["speech"] == out["speech"] and again["no_speech_prob"] == pytest.approx(out["no_speech_prob"])
    cascade.set_no_speech_probe(None)
    with torch.no_grad():
        own = cascade.transcribe(wave, lengths)["asr"]["no_speech_prob"]
    assert own != pytest.approx(expected)  # without it: Whisper's own <|nospeech|>


def test_a_backbone_without_a_no_speech_decision_refuses_a_probe():
    from components.models.asr import ASRConfig, ConformerCTC
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu

    labels = NluLabels.from_label_set()
    cascade = Cascade(None, ConformerCTC(ASRConfig(d_model=32, ffn=64, layers=1, heads=2)), build_nlu(labels), labels)
    with pytest.raises(ValueError, match="conformer_ctc backbone has no no-speech decision"):
        cascade.set_no_speech_probe(NoSpeechProbe())
