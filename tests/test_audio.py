"""Real engines, real files: every engine speaks, noise lands at the requested SNR."""

import numpy as np
import pytest
import soundfile as sf

from components.data.noise import NOISE_KINDS, make_noise, measured_snr, mix_at_snr
from components.data.speakers import PRESETS, Speaker, parse_voices
from components.data.tts import SAMPLE_RATE, synthesize

VOICES = [
    Speaker("festival", "kal_diphone"),
    Speaker("festival", "ked_diphone"),
    Speaker("festival", "cmu_us_slt_arctic_hts"),
    Speaker("flite", "slt"),
    Speaker("flite", "awb"),
    Speaker("espeak-ng", "en-gb-scotland+f3"),
    Speaker("espeak-ng", "en-us", pitch=3, rate=1.2),
]


@pytest.mark.parametrize("speaker", VOICES, ids=lambda s: s.id)
def test_engine_writes_decodable_16k_mono(speaker, tmp_path):
    outs = [tmp_path / "a.flac", tmp_path / "b.flac"]
    synthesize(speaker, ["set an alarm for seven", 'play "bohemian rhapsody" by queen'], outs)
    for out in outs:
        audio, sr = sf.read(out, dtype="float32")
        assert sr == SAMPLE_RATE and audio.ndim == 1
        assert 0.5 < audio.size / sr < 6
        assert np.sqrt(np.mean(audio**2)) > 0.01  # speech, not silence


def test_pitch_and_rate_change_the_audio(tmp_path):
    plain, fast = tmp_path / "plain.flac", tmp_path / "fast.flac"
    synthesize(Speaker("flite", "slt"), ["what time is it in london"], [plain])
    synthesize(Speaker("flite", "slt", pitch=0, rate=1.5), ["what time is it in london"], [fast])
    assert sf.info(fast).duration < 0.8 * sf.info(plain).duration


def test_speaker_ids_are_stable_and_specs_parse():
    assert Speaker("espeak-ng", "en-us+f3", 2, 1.1).id == "espeak-ng-en-us_f3-p+2-r1.1"
    speakers = parse_voices("flite:slt,demo,flite:slt:0:1")
    assert speakers[0] == Speaker("flite", "slt") and len(speakers) == 1 + len(PRESETS["demo"])
    for bad in ("flite", "nope:x", "flite:nope", "flite:slt:loud", "flite:slt:30"):
        with pytest.raises(ValueError):
            parse_voices(bad)


@pytest.mark.parametrize("kind", NOISE_KINDS)
@pytest.mark.parametrize("snr", [-5.0, 0.0, 10.0, 30.0])
def test_measured_snr_within_half_a_db_after_16bit_files(kind, snr, tmp_path):
    rng = np.random.default_rng(0)
    speech = sf.read(_speech(tmp_path), dtype="float32")[0]
    talkers = [np.roll(speech, 1000 * k) for k in range(1, 4)]
    noisy = mix_at_snr(speech, make_noise(kind, speech.size, rng, talkers), snr)
    sf.write(tmp_path / "noisy.flac", noisy, SAMPLE_RATE, subtype="PCM_16")
    read_back = sf.read(tmp_path / "noisy.flac", dtype="float32")[0]
    assert abs(measured_snr(speech, read_back) - snr) < 0.5


def _speech(tmp_path):
    path = tmp_path / "speech.flac"
    if not path.exists():
        synthesize(Speaker("flite", "rms"), ["turn off the lights in the kitchen please"], [path])
    return path


def test_pink_noise_has_falling_spectrum():
    x = make_noise("pink", 2**16, np.random.default_rng(1))
    spec = np.abs(np.fft.rfft(x)) ** 2
    low, high = spec[10:100].mean(), spec[10000:20000].mean()
    assert low > 20 * high
