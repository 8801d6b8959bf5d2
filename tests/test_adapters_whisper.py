"""Every adapter method on Whisper, by role, over a tiny random Whisper (the real tiny.en tokenizer);
and LoRA on the real WhisperForConditionalGeneration against peft: same outputs, same gradients.

Per method: it attaches by role, only its parameters train, they receive gradients through the
teacher-forced cross-entropy, zero-init methods leave the logits unchanged, removal restores them, and
greedy decoding on the KV cache runs with it. Whisper-specific targets where the default does not fit:
BitFit on '@layer', Houlsby sequential (fc2's input is wider than its output), prompt tuning on
'@decoder' (learnt decoder prompt embeddings: WhisperASR runs the encoder's layers itself). HRA takes
its default '@layer': one controller through the encoder's layers, then the decoder's.
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
    "prompt": lambda: A.PromptConfig(target_modules=["@decoder"], num_virtual_tokens=3),
    # gelu: with relu, a random perturbation can leave a decoder adapter's units all dead, and then no gradient
    "gated": lambda: A.GatedConfig(reduction_factor=4, activation="gelu"),
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer)


def tiny_whisper(tokenizer, context_seconds: float = 2.0) -> WhisperASR:
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperASRConfig(dims=DIMS, tokens=asdict(special_tokens(tokenizer, [], [220, 50256], multilingual=False)), context_seconds=context_seconds)
    return WhisperASR(config, WhisperForConditionalGeneration(hf_config(DIMS)), tokenizer).eval()


@pytest.mark.parametrize("method", sorted(CASES))
def test_every_method_attaches_to_whisper_by_role(method, tokenizer):
    asr = tiny_whisper(tokenizer)
    make_config, zero_init = CASES[method]
    config = ON_WHISPER.get(method, make_config)()
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
    if method not in ("mhr_z",):  # mhr_z trains only its routing; its frozen inventory gets no gradient by design
        assert with_grad == trainable, f"{method}: trainable parameters without a gradient: {sorted(trainable - with_grad)[:4]}"
    adapted = asr(wave, lengths)  # greedy decoding on the KV cache, then the decoder teacher-forced on the 1-best
    assert len(adapted["texts"]) == 2 and adapted["states"].shape[0] == 2
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


def _decoder_input(asr: WhisperASR) -> torch.Tensor:
    """The decoder states a teacher-forced pass on two fixed targets produces (B, S, d)."""
    wave, lengths = torch.randn(2, 16000, generator=torch.Generator().manual_seed(3)) * 0.1, torch.tensor([16000, 12000])
    targets, _ = asr.encode_targets(["set an alarm", "hello"])
    return asr.whisper.model.decoder(input_ids=targets[:, :-1], encoder_hidden_states=asr.encode(wave, lengths), use_cache=False).last_hidden_state


@pytest.mark.parametrize("cross_stack", ["reset", "pooled"])
@pytest.mark.parametrize("controller", ["shared", "per_stack"])
def test_hra_spans_both_whisper_stacks(cross_stack, controller, tokenizer):
    """'@layer': 2 encoder then 2 decoder layers in two stacks, one head a task, every part trained, decoding runs."""
    asr = tiny_whisper(tokenizer)
    hra = A.add_adapter(asr.whisper, A.HRAConfig(r=8, cross_stack=cross_stack, controller=controller), name="hra", tasks=["a", "b"])
    assert list(hra.layers) == ["model.encoder.layers.0", "model.encoder.layers.1", "model.decoder.layers.0", "model.decoder.layers.1"]
    assert hra.stack == [0, 0, 1, 1]
    assert sorted(hra.shared) == (["controller"] if controller == "shared" else ["controller", "controller_1"])
    assert sorted(hra.tasks) == ["a", "b"]
    A.freeze_backbone(asr.whisper)
    perturb(hra, asr.whisper)
    wave, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    targets, target_lengths = asr.encode_targets(["set an alarm", "hello"])
    hra.set_task(["a", "b"])
    asr.loss(asr(wave, lengths, targets, target_lengths, words=False), targets, target_lengths).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hra.parameters())
    with torch.no_grad():
        assert len(asr(wave, lengths)["texts"]) == 2  # greedy steps on the KV cache: each decoder pass starts its stack afresh


def test_hra_pooled_carry_is_the_only_link_between_stacks(tokenizer):
    """The decoder, on fixed encoder states, depends on the encoder stack's pooled controller state under
    'pooled' and not under 'reset'."""
    results = {}
    for cross_stack in ("reset", "pooled"):
        asr = tiny_whisper(tokenizer)
        hra = A.add_adapter(asr.whisper, A.HRAConfig(r=8, cross_stack=cross_stack, controller="per_stack"), name="hra", tasks=["a"])
        perturb(hra, asr.whisper)
        encoder = asr.encode(torch.randn(1, 16000, generator=torch.Generator().manual_seed(5)) * 0.1, torch.tensor([16000]))
        targets, _ = asr.encode_targets(["hello"])
        decode = lambda: asr.whisper.model.decoder(input_ids=targets[:, :-1], encoder_hidden_states=encoder.detach(), use_cache=False).last_hidden_state
        with torch.no_grad():
            before = decode()
            hra._carry[0] = hra._carry.get(0, torch.zeros(1, 1, 8)) + 1.0  # another encoder summary, same states for cross-attention
            results[cross_stack] = not torch.equal(before, decode())
    assert results == {"reset": False, "pooled": True}


def test_hra_refuses_a_decoder_pass_before_the_encoder(tokenizer):
    asr = tiny_whisper(tokenizer)
    A.add_adapter(asr.whisper, A.HRAConfig(r=8, cross_stack="pooled"), name="hra")
    targets, _ = asr.encode_targets(["hello"])
    with pytest.raises(RuntimeError, match="reads the pooled state of stack 0; run that stack first"):
        asr.whisper.model.decoder(input_ids=targets[:, :-1], encoder_hidden_states=torch.zeros(1, 50, 16), use_cache=False)


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_prompt_and_prefix_decode_on_the_cache_as_without_it(method, tokenizer):
    """Greedy decoding on the KV cache equals re-running the decoder on the whole prefix each step: the
    prompts (first step only) and the prefixes (after the cache) are seen exactly once per step."""
    asr = tiny_whisper(tokenizer)
    config = ON_WHISPER.get(method, CASES[method][0])()
    A.add_adapter(asr.whisper, config, name="x")
    wave, lengths = torch.randn(1, 16000, generator=torch.Generator().manual_seed(2)) * 0.1, torch.tensor([16000])
    with torch.no_grad():
        encoder = asr.encode(wave, lengths)
        ids = torch.tensor([asr.tokens.prompt])
        cache, steps = None, []
        for _ in range(4):
            dec = asr.whisper.model.decoder(input_ids=ids if cache is None else ids[:, -1:], encoder_hidden_states=encoder, past_key_values=cache, use_cache=True)
            cache = dec.past_key_values
            full = asr.whisper.model.decoder(input_ids=ids, encoder_hidden_states=encoder, use_cache=False).last_hidden_state[:, -1]
            torch.testing.assert_close(dec.last_hidden_state[:, -1], full, rtol=0, atol=1e-5)
            ids = torch.cat([ids, asr.whisper.proj_out(full).argmax(-1, keepdim=True)], dim=1)
            steps.append(ids[0, -1].item())
    assert len(steps) == 4


def test_prompt_and_prefix_are_not_no_ops_at_init(tokenizer):
    """Neither is zero-initialised, and cannot be: prompts add positions the decoder attends to, and even zero
    prefix keys take softmax mass from the real keys. So both change the logits from the first step."""
    for method, config in (("prompt", ON_WHISPER["prompt"]()), ("prefix", A.PrefixConfig(num_virtual_tokens=3))):
        asr = tiny_whisper(tokenizer)
        wave, lengths = torch.randn(1, 16000) * 0.1, torch.tensor([16000])
        targets, target_lengths = asr.encode_targets(["hello"])
        before = asr(wave, lengths, targets, target_lengths, words=False)["target_logits"]
        A.add_adapter(asr.whisper, config, name="x")
        after = asr(wave, lengths, targets, target_lengths, words=False)["target_logits"]
        assert after.shape == before.shape and not torch.allclose(after, before), method
