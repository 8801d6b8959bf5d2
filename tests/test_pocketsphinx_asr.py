"""PocketSphinx baseline on real synthesized speech (festival diphone voice), fully offline."""

import shutil

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("pocketsphinx")

from components.data.speakers import Speaker  # noqa: E402
from components.data.tts import synthesize  # noqa: E402
from components.metrics.asr import wer  # noqa: E402
from components.models.pocketsphinx_asr import PocketSphinxASR, to_pcm16  # noqa: E402

TEXTS = ["what time is it", "turn off the lights", "play some music"]


@pytest.fixture(scope="module")
def asr() -> PocketSphinxASR:
    return PocketSphinxASR()


@pytest.fixture(scope="module")
def waves(tmp_path_factory) -> list[np.ndarray]:
    if shutil.which("festival") is None or shutil.which("sox") is None:
        pytest.skip("festival/sox not installed")
    tmp = tmp_path_factory.mktemp("ps_tts")
    paths = [tmp / f"{i}.flac" for i in range(len(TEXTS))]
    synthesize(Speaker("festival", "kal_diphone"), TEXTS, paths)
    out = []
    for p in paths:
        audio, sr = sf.read(p, dtype="float32")
        assert sr == 16_000 and audio.ndim == 1
        out.append(audio)
    return out


def test_bundled_model_is_used(asr):
    for key, path in asr.model_files.items():
        assert "pocketsphinx" in path, (key, path)


def test_transcribes_synthesized_speech(asr, waves):
    hyps = asr.transcribe_batch(waves)
    assert len(hyps) == len(TEXTS)
    for h in hyps:
        assert isinstance(h, str) and h == h.lower()
    assert wer(TEXTS, hyps) < 0.6, hyps


def test_single_equals_batch_and_decoder_is_reused(asr, waves):
    decoder = asr.decoder
    assert asr.transcribe(waves[0]) == asr.transcribe_batch(waves[:1])[0]
    assert asr.decoder is decoder


def test_empty_and_silent_input(asr):
    assert asr.transcribe(np.zeros(0, np.float32)) == ""
    assert asr.transcribe(np.zeros(16_000, np.float32)) == ""
    assert asr.transcribe_batch([]) == []


def test_column_vector_and_pcm_clipping(asr, waves):
    assert asr.transcribe(waves[1][:, None]) == asr.transcribe(waves[1])
    pcm = np.frombuffer(to_pcm16(np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0], np.float32)), dtype="<i2")
    assert pcm.tolist() == [-32767, -32767, 0, 16384, 32767, 32767]
