"""Every adapter method on Whisper, by role, over a tiny random Whisper (the real tiny.en tokenizer);
and LoRA on the real WhisperForConditionalGeneration against peft: same outputs, same gradients.

Per method: it attaches by role, only its parameters train, they receive gradients through the
teacher-forced cross-entropy, zero-init methods leave the logits unchanged, removal restores them.
Whisper-specific targets where the default does not fit: BitFit on '@layer', HRA on '@encoder_layer' (the
encoder's and the decoder's sequences differ in length, so one HRA controller cannot run through both),
Houlsby sequential (fc2's input is wider than its output). Prompt and prefix tuning are refused with
the reason: WhisperASR runs the encoder's layers itself (no encoder forward to prepend to), and
WhisperAttention has no key/value hook yet.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from components import adapters as A
from components.models.whisper.load import DEFAULT_MODEL, hf_config, load_tokenizer, special_tokens, whisper_files
from components.models.whisper.model import WhisperASR, WhisperASRConfig
from tests.test_adapters import CASES, perturb

DIMS = dict(vocab_size=51864, d_model=16, num_mel_bins=80, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=448)
ON_WHISPER = {
    "bitfit": lambda: A.BitFitConfig(target_modules=["@layer"]),
    "houlsby": lambda: A.HoulsbyConfig(reduction_factor=4, placement="sequential"),
    "hra": lambda: A.HRAConfig(target_modules=["@encoder_layer"], r=8),
}
REFUSED = {"prompt": "role '@encoder' is not defined", "prefix": "WhisperAttention"}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer)


def tiny_whisper(tokenizer) -> WhisperASR:
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperASRConfig(dims=DIMS, tokens=asdict(special_tokens(tokenizer, [], [220, 50256], multilingual=False)), context_seconds=2.0)
    return WhisperASR(config, WhisperForConditionalGeneration(hf_config(DIMS)), tokenizer).eval()


@pytest.mark.parametrize("method", sorted(CASES))
def test_every_method_attaches_to_whisper_by_role(method, tokenizer):
    asr = tiny_whisper(tokenizer)
    make_config, zero_init = CASES[method]
    config = ON_WHISPER.get(method, make_config)()
    if method in REFUSED:
        with pytest.raises((ValueError, TypeError), match=REFUSED[method]):
            A.add_adapter(asr.whisper, config, name="x")
        return
    torch.manual_seed(1)
    wave, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    targets, target_lengths = asr.encode_targets(["set an alarm for five am", "hello"])
    before = asr(wave, lengths, targets, target_lengths, words=False)["target_logits"]
    adapter = A.add_adapter(asr.whisper, config, name="x")
    A.freeze_backbone(asr.whisper)
    out = asr(wave, lengths, targets, target_lengths, words=False)
    if zero_init:
        torch.testing.assert_close(out["target_logits"], before, rtol=0, atol=1e-5)
    trainable = {n for n, p in asr.named_parameters() if p.requires_grad}
    mine = {f"whisper.{n}" for n, _ in A.inject.adapter_named_parameters(asr.whisper, adapter)}
    assert trainable and trainable <= mine, "only the adapter trains"
    perturb(adapter, asr.whisper)  # off zero-init, so every part (routing included) gets a gradient
    out = asr(wave, lengths, targets, target_lengths, words=False)
    asr.loss(out, targets, target_lengths).backward()
    with_grad = {n for n, p in asr.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert with_grad, f"no {method} parameter got a gradient"
    A.remove_adapter(asr.whisper, "x")
    assert not any(isinstance(m, A.AdapterLayer) for m in asr.modules())
    torch.testing.assert_close(asr(wave, lengths, targets, target_lengths, words=False)["target_logits"], before, rtol=0, atol=1e-6)


def test_lora_on_whisper_matches_peft():
    """peft's native Whisper LoRA (q_proj, v_proj) and ours on the same pre-trained tiny.en: same logits, same gradients."""
    peft = pytest.importorskip("peft")
    ours = WhisperASR.pretrained().eval()
    theirs = WhisperASR.pretrained().eval()
    targets = [f"model.{stack}.layers.*.{attn}.{p}_proj" for stack in ("encoder", "decoder") for attn in ("self_attn",) for p in ("q", "v")]
    targets += [f"model.decoder.layers.*.encoder_attn.{p}_proj" for p in ("q", "v")]
    lora = A.add_adapter(ours.whisper, A.LoraConfig(target_modules=targets, r=4, alpha=8))
    A.freeze_backbone(ours.whisper)
    theirs.whisper = peft.get_peft_model(theirs.whisper, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)).base_model.model
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for path, layer in lora.layers.items():
            peft_layer = theirs.whisper.get_submodule(path)
            for part in ("lora_A", "lora_B"):
                value = torch.randn(layer.tasks["default"][part].weight.shape, generator=g) * 0.1
                layer.tasks["default"][part].weight.copy_(value)
                getattr(peft_layer, part)["default"].weight.copy_(value)
    assert len(lora.layers) == 24  # 4 layers x (encoder self, decoder self, decoder cross) x (q, v)
    wave, lengths = torch.randn(2, 16000, generator=g) * 0.1, torch.tensor([16000, 9000])
    t, tl = ours.encode_targets(["wake me up at five am", "what's the weather"])
    a, b = ours(wave, lengths, t, tl, words=False), theirs(wave, lengths, t, tl, words=False)
    torch.testing.assert_close(a["target_logits"], b["target_logits"], rtol=0, atol=1e-4)
    ours.loss(a, t, tl).backward()
    theirs.loss(b, t, tl).backward()
    for path, layer in lora.layers.items():
        for part in ("lora_A", "lora_B"):
            torch.testing.assert_close(layer.tasks["default"][part].weight.grad, getattr(theirs.whisper.get_submodule(path), part)["default"].weight.grad, rtol=1e-4, atol=1e-6)
