"""SE and ASR models on real synthesized speech: shapes, masks, overfitting one batch."""

import pytest
import torch

from components.data.corpus import CorpusConfig, build_corpus
from components.data.dataset import SpeechDataset, collate
from components.data.manifest import read_manifest
from components.data.slurp import read_slurp
from components.data.speakers import Speaker
from components.models.asr import HOP, ASRConfig, ConformerCTC, ctc_loss, greedy_decode
from components.models.se import MaskEnhancer, se_loss, si_snr
from components.models.nlu import split_words
from components.models.text import CharVocab, normalise

TINY = ASRConfig(d_model=96, ffn=256, layers=2, heads=4, dropout=0.0)


@pytest.fixture(scope="module")
def batch(slurp_jsonl, tmp_path_factory):
    out = tmp_path_factory.mktemp("speech")
    shortest = sorted(read_slurp(slurp_jsonl)[:40], key=lambda r: len(r.sentence))[:4]  # short audio: fast steps
    manifest = build_corpus(shortest, out, CorpusConfig([Speaker("flite", "slt")], snrs=[5.0], noise_kinds=["white"], workers=2), progress=False)
    ds = SpeechDataset(read_manifest(manifest), out)
    return collate([ds[i] for i in range(4)])


def test_vocab_round_trip_and_slurp_words():
    v = CharVocab()
    assert v.decode(v.encode("Wake me up at 7 o'clock!").tolist()) == "wake me up at o'clock"
    assert normalise("  Hello,   WORLD ") == "hello world"
    assert split_words("what is mom's email i don't know") == ["what", "is", "mom", "'s", "email", "i", "do", "n't", "know"]


def test_shapes_lengths_and_masks(batch):
    torch.manual_seed(0)
    model = ConformerCTC(TINY).eval()
    out = model(batch["noisy"], batch["lengths"])
    b, t, v = out["logits"].shape
    assert (b, v) == (4, len(model.vocab)) and out["states"].shape == (4, t, TINY.d_model)
    assert out["lengths"].max() == t and (out["lengths"] >= batch["lengths"] // HOP // 4 - 1).all()
    feats, frames = model.features(batch["noisy"], batch["lengths"])
    shortest = int(batch["lengths"].argmin())
    assert feats[shortest, frames[shortest]:].abs().sum() == 0  # padded frames are zero after normalisation
    alone, _ = model.features(batch["noisy"][shortest : shortest + 1, : batch["lengths"][shortest]], batch["lengths"][shortest : shortest + 1])
    assert alone.shape[1] == frames[shortest]  # the frame count derived from the length is the real one
    torch.testing.assert_close(alone[0], feats[shortest, : alone.shape[1]], atol=1e-5, rtol=0)


def test_an_utterance_gets_the_same_output_alone_and_in_a_padded_batch(batch):
    """Padding never leaks into real samples or frames (the serving batcher mixes utterances of any length)."""
    torch.manual_seed(0)
    se, asr = MaskEnhancer(), ConformerCTC(TINY).eval()
    with torch.no_grad():
        se.mask.weight.normal_(0, 0.05)  # a mask that varies with the input, as after training
        enhanced, out = se(batch["noisy"], batch["lengths"]), asr(batch["noisy"], batch["lengths"])
        for b, n in enumerate(batch["lengths"].tolist()):
            wave = batch["noisy"][b : b + 1, :n]
            torch.testing.assert_close(se(wave)[0], enhanced[b, :n], atol=1e-5, rtol=0)
            assert enhanced[b, n:].abs().sum() == 0
            alone = asr(wave, torch.tensor([n]))
            frames = int(out["lengths"][b])
            assert int(alone["lengths"][0]) == frames
            torch.testing.assert_close(alone["logits"][0], out["logits"][b, :frames], atol=1e-4, rtol=0)


def test_asr_overfits_one_batch_to_the_exact_transcripts(batch):
    torch.manual_seed(0)
    model = ConformerCTC(TINY)
    opt = torch.optim.AdamW(model.parameters(), 2e-3)
    targets, lengths = model.encode_targets([m["text"] for m in batch["meta"]])
    for _ in range(500):
        loss = ctc_loss(model(batch["clean"], batch["lengths"]), targets, lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.005:
            break
    assert loss.item() < 0.01
    model.eval()
    assert greedy_decode(model(batch["clean"], batch["lengths"]), model.vocab) == [normalise(m["text"]) for m in batch["meta"]]


def test_se_starts_near_identity_and_overfits(batch):
    torch.manual_seed(0)
    se = MaskEnhancer()
    with torch.no_grad():
        assert si_snr(se(batch["noisy"]), batch["noisy"]).min() > 30  # mask ~0.95 everywhere
        before = si_snr(batch["noisy"], batch["clean"]).mean()
    opt = torch.optim.Adam(se.parameters(), 3e-3)
    for _ in range(60):
        loss = se_loss(se(batch["noisy"]), batch["clean"], batch["lengths"], se)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = si_snr(se(batch["noisy"]), batch["clean"]).mean()
    assert after > before + 3  # dB of SI-SNR gained on the batch it trained on


def test_asr_loss_reaches_the_enhancer(batch):
    se, asr = MaskEnhancer(), ConformerCTC(TINY)
    targets, lengths = asr.encode_targets([m["text"] for m in batch["meta"]])
    loss = ctc_loss(asr(se(batch["noisy"]), batch["lengths"]), targets, lengths)
    loss.backward()
    assert se.mask.weight.grad is not None and se.mask.weight.grad.abs().sum() > 0
