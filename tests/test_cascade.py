"""The SE -> ASR -> NLU cascade: word segmentation, tag transfer, gradient flow, both modes, save/load."""

import json

import pytest
import torch

from components.data.corpus import CorpusConfig, build_corpus
from components.data.dataset import SpeechDataset, collate
from components.data.manifest import read_manifest
from components.data.slurp import read_slurp
from components.data.speakers import Speaker
from components.models.asr import ASRConfig, ConformerCTC
from components.cascade_files import load_cascade, save_cascade
from components.models.asr import hypothesis_words
from components.models.cascade import Cascade, align_tags, cascade_loss, pool_words, slurp_pieces, tags_from_fillers
from components.models.nlu import NluLabels, build_nlu, encode_texts
from components.models.se import MaskEnhancer
from components.models.text import CharVocab

TINY = ASRConfig(d_model=96, ffn=256, layers=2, heads=4, dropout=0.0)


@pytest.fixture(scope="module")
def clips(slurp_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade")
    records = [r for r in read_slurp(slurp_jsonl) if r.entities][:3]
    manifest = build_corpus(records, out, CorpusConfig([Speaker("espeak-ng", "en-us")], snrs=[10.0], noise_kinds=["pink"], workers=2), progress=False)
    return SpeechDataset(read_manifest(manifest), out)


@pytest.fixture(scope="module")
def batch(clips):
    return collate([clips[i] for i in range(len(clips))])


@pytest.fixture(scope="module")
def cascade():
    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    return Cascade(MaskEnhancer(), ConformerCTC(TINY), build_nlu(labels), labels)


def test_hypothesis_words_and_pooling():
    v = CharVocab()
    ids = lambda s: [v.index[c] for c in s]  # noqa: E731
    path = [0] + ids("hh") + [0] + ids("i ") + [0, 0] + ids("mom's") + [0]
    assert hypothesis_words(path, v) == [("hi", 1, 5), ("mom's", 8, 14)]
    words = slurp_pieces(hypothesis_words(path, v))  # the cascade splits clitics as SLURP does
    assert words == [("hi", 1, 5), ("mom", 8, 14), ("'s", 8, 14)]
    states = torch.arange(2 * 14 * 3, dtype=torch.float).reshape(2, 14, 3)
    pooled, mask = pool_words(states, [[(a, b) for _, a, b in words], []])
    assert pooled.shape == (2, 3, 3) and mask.tolist() == [[True] * 3, [True, False, False]]
    assert torch.allclose(pooled[0, 0], states[0, 1:5].mean(0))
    assert torch.allclose(pooled[1, 0], states[1].mean(0))  # no word: one slot over all frames


def test_tags_transfer_through_alignment():
    ref = "wake me up at seven am tomorrow".split()
    ref_tags = tags_from_fillers(ref, [{"type": "time", "filler": "seven am"}, {"type": "date", "filler": "tomorrow"}])
    assert ref_tags == ["O", "O", "O", "O", "B-time", "I-time", "B-date"]
    assert align_tags(ref, ref, ref_tags) == ref_tags
    # a deleted first word of an entity: the run still starts with B-
    assert align_tags("wake me up at am tomorrow".split(), ref, ref_tags) == ["O", "O", "O", "O", "B-time", "B-date"]
    assert align_tags("wake me up at eleven am to morrow".split(), ref, ref_tags)[4:6] == ["B-time", "I-time"]


@pytest.mark.parametrize("bridge_input", ["residual", "layer_norm"])
def test_nlu_loss_reaches_every_module(cascade, batch, bridge_input):
    model = Cascade(cascade.se, cascade.asr, cascade.nlu, cascade.labels, bridge_input=bridge_input)
    if bridge_input == "residual":  # zero at the start: the NLU loss reaches the bridge, and through it once it is not zero
        model.zero_grad()
        cascade_loss(model, batch, {"asr": 0.0, "se": 0.0})[0].backward()
        assert model.bridge.weight.grad.abs().sum() > 0 and all(p.grad is None or not p.grad.any() for p in model.asr.parameters())
        torch.nn.init.normal_(model.bridge.weight, std=0.01)
    model.zero_grad()
    loss, parts = cascade_loss(model, batch, {"asr": 0.0, "se": 0.0})
    loss.backward()
    assert set(parts) == {"nlu"}
    for name in ("se", "asr", "bridge", "nlu"):
        grads = [p.grad for p in getattr(model, name).parameters() if p.requires_grad and p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0, f"no NLU gradient reached {name}"


def test_residual_bridge_starts_as_the_text_mode_and_learns_from_the_acoustics(cascade, batch):
    """At zero the e2e path is the text path on the greedy 1-best, to the logit; a non-zero bridge changes it."""
    from components.models.nlu import load_tokenizer

    import copy

    model = Cascade(None, cascade.asr, copy.deepcopy(cascade.nlu), cascade.labels).eval()
    assert model.bridge_input == "residual"
    with torch.no_grad():
        out = model(batch["noisy"], batch["lengths"])
        text = model.nlu(**encode_texts(load_tokenizer(), [w or ["<empty>"] for w in out["words"]]))
        assert torch.equal(out["nlu"]["scenario_logits"], text["scenario_logits"]) and torch.equal(out["nlu"]["tag_logits"], text["tag_logits"])
        e2e = model.predict(batch["noisy"], batch["lengths"], batch["meta"], mode="e2e")
        assert e2e == model.predict(batch["noisy"], batch["lengths"], batch["meta"], mode="text", tokenizer=load_tokenizer())
        torch.nn.init.normal_(model.bridge.weight, std=0.05)
        assert not torch.allclose(model(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"], text["scenario_logits"])
        # bridge dropout: in training, a dropped utterance reads its 1-best alone (the cascade's flag only, so the NLU's own dropout stays off)
        model.bridge_dropout = 0.999999
        model.training = True
        dropped = model.read_words(out["words"], *pool_words(out["asr"]["states"], [[(a, b) for _, a, b in h] for h in model.transcribe(batch["noisy"], batch["lengths"])["hyps"]]))
        torch.testing.assert_close(dropped["scenario_logits"], text["scenario_logits"])
    with pytest.raises(ValueError, match="bridge_dropout must be in"):
        Cascade(None, cascade.asr, cascade.nlu, cascade.labels, bridge_input="layer_norm", bridge_dropout=0.5)


def test_the_text_mode_loss_reads_the_words_alone(cascade, batch):
    """cascade_loss(mode="text"): the NLU on the 1-best's words, as a text-mode service reads them. With the
    residual bridge at zero that is e2e's loss; the bridge gets no gradient from it."""
    import copy

    model = Cascade(None, cascade.asr, copy.deepcopy(cascade.nlu), cascade.labels).eval()
    weights = {"asr": 0.0, "se": 0.0}
    e2e, _ = cascade_loss(model, batch, weights)
    text, _ = cascade_loss(model, batch, weights, mode="text")
    torch.testing.assert_close(text, e2e)
    text.backward()
    assert model.bridge.weight.grad is None and any(p.grad is not None and p.grad.any() for p in model.nlu.parameters())
    with pytest.raises(ValueError, match="unknown cascade mode 'audio'"):
        cascade_loss(model, batch, weights, mode="audio")


def test_both_modes_predict_slurp_records(cascade, batch, tmp_path):
    from components.models.nlu import load_tokenizer

    cascade.eval()
    for mode in ("e2e", "text"):
        results = cascade.predict(batch["noisy"], batch["lengths"], batch["meta"], mode=mode, tokenizer=load_tokenizer())
        assert len(results) == 3
        for pred, transcript in results:
            assert f"{pred.scenario}_{pred.action}" in cascade.labels.intents and isinstance(transcript, str)
    with pytest.raises(ValueError, match="unknown cascade mode"):
        cascade.predict(batch["noisy"], batch["lengths"], batch["meta"], mode="nope")


def test_per_word_bridge_pretrains_from_transcripts_alone(cascade, clips):
    """The layer_norm bridge learns to map pooled states to MiniLM's word embeddings; nothing else moves."""
    from components.training.loop import TrainConfig
    from components.training.recipes import train_bridge

    model = Cascade(None, cascade.asr, cascade.nlu, cascade.labels, bridge_input="layer_norm")
    bridge, others = model.bridge.weight.detach().clone(), [p.detach().clone() for p in model.nlu.parameters()]
    result = train_bridge(model, clips, clips, TrainConfig(max_epochs=2, batch_size=3, lr=0.01, progress=False))
    assert not torch.equal(model.bridge.weight, bridge) and all(torch.equal(a, b) for a, b in zip(others, model.nlu.parameters()))
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]


def test_save_load_round_trip(cascade, batch, tmp_path):
    cascade.eval()
    save_cascade(cascade, tmp_path / "model")
    config = json.loads((tmp_path / "model/cascade.json").read_text())
    assert config["format"] == "cascadapt-cascade/3" and config["asr"]["kind"] == "conformer_ctc" and config["bridge_input"] == "residual"
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin"))
    loaded = load_cascade(tmp_path / "model")
    with torch.no_grad():
        a, b = cascade(batch["noisy"], batch["lengths"]), loaded(batch["noisy"], batch["lengths"])
    assert torch.equal(a["nlu"]["scenario_logits"], b["nlu"]["scenario_logits"])
    assert a["words"] == b["words"]


def test_files_of_formats_1_and_2_still_load_with_their_raw_bridge_input(cascade, batch, tmp_path):
    """Before format 3 the bridge read the raw pooled states; format 1 also had no backbone kind."""
    raw = Cascade(cascade.se, cascade.asr, cascade.nlu, cascade.labels, bridge_input="raw").eval()
    save_cascade(raw, tmp_path / "model")
    config = json.loads((tmp_path / "model/cascade.json").read_text())
    del config["bridge_input"]
    with torch.no_grad():
        expected = raw(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"]
        for old_format in ("cascadapt-cascade/2", "cascadapt-cascade/1"):
            config["format"] = old_format
            if old_format.endswith("/1"):
                del config["asr"]["kind"]
            (tmp_path / "model/cascade.json").write_text(json.dumps(config))
            old = load_cascade(tmp_path / "model")
            assert old.bridge_input == "raw" and torch.equal(old(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"], expected)
    assert raw.embed_words(torch.ones(1, 1, raw.asr.hidden_size)).shape == (1, 1, 384)
    with pytest.raises(ValueError, match="bridge_input must be one of"):
        Cascade(None, cascade.asr, cascade.nlu, cascade.labels, bridge_input="norm")
