"""Prompt tuning and prefix tuning: shapes, ownership, tasks, padding, removal, and parity with peft / torch."""

from __future__ import annotations

import copy

import pytest
import torch
import torchaudio
import transformers
from torch import nn

from components import adapters
from components.adapters.attention import Attention
from components.adapters.prefix import PrefixConfig, PrefixSelfAttentionLayer
from components.adapters.prompt import PromptConfig

P = 3  # virtual tokens in every test


class Speech(nn.Module):
    """A tiny Conformer in a container (adapters cannot replace the root)."""

    def __init__(self, kernel: int = 3) -> None:
        super().__init__()
        self.enc = torchaudio.models.Conformer(input_dim=16, num_heads=4, ffn_dim=32, num_layers=2, depthwise_conv_kernel_size=kernel)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        out, out_lengths = self.enc(x, lengths)
        assert torch.equal(out_lengths, lengths)
        return out


class Text(nn.Module):
    """A tiny BERT in a container; called like NluModel calls its encoder."""

    def __init__(self, attn: str = "sdpa") -> None:
        super().__init__()
        cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)
        cfg._attn_implementation = attn
        self.bert = transformers.BertModel(cfg, add_pooling_layer=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state


def speech(kernel: int = 3) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    model = Speech(kernel).eval()
    return model, (torch.randn(3, 7, 16), torch.tensor([7, 5, 6]))


def text(attn: str = "sdpa") -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    model = Text(attn).eval()
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1, 4:] = 0
    return model, (torch.randint(1, 50, (3, 6)), mask)


PROMPT = lambda: PromptConfig(num_virtual_tokens=P)  # noqa: E731
PREFIX = lambda: PrefixConfig(num_virtual_tokens=P)  # noqa: E731
PREFIX_MLP = lambda: PrefixConfig(num_virtual_tokens=P, prefix_projection=True, projection_hidden=8)  # noqa: E731
CASES = [(PROMPT, speech), (PROMPT, text), (PREFIX, speech), (PREFIX, text), (PREFIX_MLP, speech), (PREFIX_MLP, text)]
IDS = ["prompt-conformer", "prompt-bert", "prefix-conformer", "prefix-bert", "prefix_mlp-conformer", "prefix_mlp-bert"]


def perturb(model: nn.Module, task: str) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if f".tasks.{task}." in name:
                p.add_(torch.randn_like(p))


# ---------------------------------------------------------------- generic behaviour, both methods, both backbones


@pytest.mark.parametrize("config,build", CASES, ids=IDS)
def test_shapes_not_zero_init_and_removal(config, build):
    model, inputs = build()
    ref = model(*inputs)
    adapters.add_adapter(model, config(), name="a", tasks=["t"])
    out = model(*inputs)
    assert out.shape == ref.shape  # prompt positions stripped / queries not prefixed
    assert not torch.allclose(out, ref, atol=1e-4)  # neither method is zero-init
    adapters.remove_adapter(model, "a")
    assert torch.equal(model(*inputs), ref)
    assert not any(isinstance(m, (Attention, adapters.AdapterLayer)) for m in model.modules())


@pytest.mark.parametrize("config,build", CASES, ids=IDS)
def test_only_task_parameters_train_and_get_gradients(config, build):
    model, inputs = build()
    method = adapters.add_adapter(model, config(), name="a", tasks=["t", "u"])
    adapters.freeze_backbone(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".tasks.t." in n or ".tasks.u." in n for n in trainable)
    report = adapters.adapter_report(model)["adapters"]["a"]
    assert report["shared"] == 0 and report["tasks"]["t"] == report["tasks"]["u"] > 0
    method.set_task("t")
    model(*inputs).square().sum().backward()
    for name, p in model.named_parameters():
        if ".tasks.t." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:  # the other task and the backbone
            assert p.grad is None, name


@pytest.mark.parametrize("config,build", CASES, ids=IDS)
def test_task_switching_and_mixed_batch(config, build):
    model, (x, second) = build()
    method = adapters.add_adapter(model, config(), name="a", tasks=["t", "u"])
    perturb(model, "u")
    method.set_task("t")
    out_t = model(x, second)
    method.set_task("u")
    out_u = model(x, second)
    assert not torch.allclose(out_t, out_u, atol=1e-4)
    method.set_task(torch.tensor([1, 0, 1]))
    mixed = model(x, second)
    torch.testing.assert_close(mixed, torch.stack([out_u[0], out_t[1], out_u[2]]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("config,build", CASES, ids=IDS)
def test_save_load_task_round_trip(config, build, tmp_path):
    model, inputs = build()
    method = adapters.add_adapter(model, config(), name="a", tasks=["t"])
    perturb(model, "t")
    expected = model(*inputs)
    adapters.save_task(model, tmp_path / "t.safetensors", "t", name="a")
    assert isinstance(adapters.config_from_file(tmp_path / "t.safetensors"), type(config()))

    fresh, _ = build()
    adapters.add_adapter(fresh, config(), name="a", tasks=["other"])
    assert adapters.load_task(fresh, tmp_path / "t.safetensors", name="a") == "t"
    adapters.get_adapter(fresh, "a").set_task("t")
    torch.testing.assert_close(fresh(*inputs), expected, rtol=0, atol=0)
    assert method.task_names == ["t"]


@pytest.mark.parametrize("config", [PROMPT, PREFIX], ids=["prompt", "prefix"])
def test_padded_frames_do_not_change_real_frames(config):
    """A shorter utterance / sentence padded with garbage gives the same real-frame outputs as alone."""
    model, _ = speech(kernel=1)  # kernel 1: the Conformer's depthwise conv is pointwise, so only attention mixes frames
    adapters.add_adapter(model, config(), name="a", tasks=["t"])
    x = torch.randn(2, 6, 16)
    alone = model(x[1:, :4], torch.tensor([4]))
    x[1, 4:] = 100.0  # padding
    batched = model(x, torch.tensor([6, 4]))
    torch.testing.assert_close(batched[1, :4], alone[0], rtol=0, atol=1e-5)

    bert, _ = text()
    adapters.add_adapter(bert, config(), name="a", tasks=["t"])
    ids = torch.randint(1, 50, (2, 6))
    alone = bert(ids[1:, :4], torch.ones(1, 4, dtype=torch.long))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1, 4:] = 0
    batched = bert(ids, mask)
    torch.testing.assert_close(batched[1, :4], alone[0], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- prompt tuning


def test_prompt_bert_call_modes_output_type_and_delegation():
    model, (ids, mask) = text()
    method = adapters.add_adapter(model, PROMPT(), name="a", tasks=["t"])
    layer = method.layers["bert"]
    # NluModel reaches into its encoder: the wrapper hands through what it does not have itself
    assert layer.get_input_embeddings() is model.bert.base.embeddings.word_embeddings
    assert layer.encoder is model.bert.base.encoder
    out = model.bert(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids), output_hidden_states=True)
    assert isinstance(out, transformers.modeling_outputs.BaseModelOutputWithPoolingAndCrossAttentions)
    assert out.last_hidden_state.shape == (3, 6, 16) and out["last_hidden_state"] is out.last_hidden_state
    assert all(h.shape == (3, 6, 16) for h in out.hidden_states)
    embeds = layer.get_input_embeddings()(ids)
    torch.testing.assert_close(model.bert(inputs_embeds=embeds, attention_mask=mask).last_hidden_state, out.last_hidden_state, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.bert(ids, mask, return_dict=False)[0], out.last_hidden_state, rtol=0, atol=1e-6)  # positional call
    with pytest.raises(ValueError, match="position_ids"):
        model.bert(input_ids=ids, position_ids=torch.arange(6)[None])
    with pytest.raises(ValueError, match="exactly one"):
        model.bert(attention_mask=mask)


def test_prompt_conformer_prompts_are_real_frames():
    """Ours = the base Conformer run by hand on [prompt; input] with lengths + P, first P outputs cut."""
    model, (x, lengths) = speech()
    base = copy.deepcopy(model.enc)
    method = adapters.add_adapter(model, PROMPT(), name="a", tasks=["t"])
    prompt = method.layers["enc"].tasks["t"].prompt
    manual, manual_lengths = base(torch.cat([prompt.expand(3, P, 16), x], 1), lengths + P)
    out, out_lengths = model.enc(x, lengths)
    assert torch.equal(out_lengths, lengths)
    torch.testing.assert_close(out, manual[:, P:], rtol=0, atol=1e-6)


def test_prompt_parity_with_peft():
    peft = pytest.importorskip("peft")
    model, (ids, mask) = text()
    bert = copy.deepcopy(model.bert)
    method = adapters.add_adapter(model, PROMPT(), name="a", tasks=["t"])
    adapters.freeze_backbone(model)
    reference = peft.get_peft_model(bert, peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=P))
    theirs = {n: p for n, p in reference.named_parameters() if p.requires_grad}
    ours = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # the same trainable set: one (P, hidden) table per task
    assert [tuple(p.shape) for p in theirs.values()] == [tuple(p.shape) for p in ours.values()] == [(P, 16)]
    assert list(ours) == ["bert.tasks.t.prompt"]
    with torch.no_grad():
        reference.prompt_encoder["default"].embedding.weight.copy_(method.layers["bert"].tasks["t"].prompt)
    expected = reference(input_ids=ids, attention_mask=mask).last_hidden_state[:, P:]
    torch.testing.assert_close(model(ids, mask), expected, rtol=0, atol=1e-6)
    embeds = bert.get_input_embeddings()(ids)
    expected = reference(inputs_embeds=embeds, attention_mask=mask).last_hidden_state[:, P:]
    torch.testing.assert_close(model.bert(inputs_embeds=embeds, attention_mask=mask).last_hidden_state, expected, rtol=0, atol=1e-6)


def test_prompt_refuses_other_modules():
    model, _ = speech()
    with pytest.raises(TypeError, match="Conformer or a Hugging Face encoder"):
        adapters.add_adapter(model, PromptConfig(target_modules=["enc.conformer_layers.0.ffn1"]), name="a")
    with pytest.raises(ValueError, match="vocab"):
        adapters.add_adapter(model, PromptConfig(init="vocab"), name="b")
    bert, _ = text()
    method = adapters.add_adapter(bert, PromptConfig(init="vocab", num_virtual_tokens=P), name="c")
    table = bert.bert.get_input_embeddings().weight
    prompt = method.layers["bert"].tasks["default"].prompt
    assert all(any(torch.equal(row, t) for t in table) for row in prompt)  # vocab init: rows of the embedding table


# ---------------------------------------------------------------- prefix tuning


class OneAttention(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = mha


def test_prefix_equals_torch_add_bias_kv():
    """One prefix token is exactly torch's MultiheadAttention(add_bias_kv=True): a learnt key and value in projected
    space added to K and V (not Q), never masked. Checks the concatenation, the heads split and the padding mask."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4).eval()  # time first, like the Conformer's
    reference = nn.MultiheadAttention(16, 4, add_bias_kv=True).eval()
    model = OneAttention(mha)
    method = adapters.add_adapter(model, PrefixConfig(target_modules=["attn"], num_virtual_tokens=1), name="a", tasks=["t"])
    prefix = method.layers["attn"].tasks["t"]
    with torch.no_grad():
        reference.in_proj_weight.copy_(mha.in_proj_weight)
        reference.in_proj_bias.copy_(mha.in_proj_bias)
        reference.out_proj.load_state_dict(mha.out_proj.state_dict())
        reference.bias_k.copy_(prefix.key.view(1, 1, 16))
        reference.bias_v.copy_(prefix.value.view(1, 1, 16))
    x = torch.randn(5, 2, 16)  # (T, B, d)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    ours = model.attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]
    theirs = reference(x, x, x, key_padding_mask=pad, need_weights=False)[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="attn_mask"):
        model.attn(x, x, x, attn_mask=torch.zeros(5, 5, dtype=torch.bool))


@pytest.mark.parametrize("projection", [False, True], ids=["plain", "mlp"])
def test_prefix_parity_with_peft(projection):
    """peft's prefix tuning on the tiny BERT, same prefixes -> same outputs. peft shifts the real tokens' positions by P
    (its prefixes sit in the cache); we do not, so our model gets position_ids P.. to compare like with like."""
    peft = pytest.importorskip("peft")
    model, (ids, mask) = text()
    bert = copy.deepcopy(model.bert)
    config = PrefixConfig(num_virtual_tokens=P, prefix_projection=projection, projection_hidden=8)
    method = adapters.add_adapter(model, config, name="a", tasks=["t"])
    adapters.freeze_backbone(model)
    reference = peft.get_peft_model(
        bert, peft.PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=P, prefix_projection=projection, encoder_hidden_size=8)
    )
    encoder = reference.prompt_encoder["default"]
    layers = [method.layers[f"bert.encoder.layer.{i}.attention.self"].tasks["t"] for i in range(2)]
    d = 16
    with torch.no_grad():  # peft's table/output (P, 2 L d): layer l's keys at rows 2l, values at 2l+1 (in d-blocks)
        if projection:
            encoder.embedding.weight.copy_(method.tasks["t"].embedding)
            encoder.transform[0].load_state_dict(method.tasks["t"].down.state_dict())
            encoder.transform[2].weight.copy_(torch.cat([t.up.weight for t in layers]))
            encoder.transform[2].bias.copy_(torch.cat([t.up.bias for t in layers]))
        else:
            encoder.embedding.weight.copy_(torch.cat([torch.cat([t.key, t.value], -1) for t in layers], -1))
    n_ours = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_theirs = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert n_ours == n_theirs == (P * d + d * 8 + 8 + 2 * (8 * 2 * d + 2 * d) if projection else 2 * 2 * P * d)
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    expected = reference(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
    ours = model(ids, mask, position_ids=positions + P)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_prefix_bert_reimplementation_matches_base(attn):
    """With no prefix (P = 0) our re-implemented BERT self-attention is the installed transformers' own."""
    model, (ids, mask) = text(attn)
    method = adapters.add_adapter(model, PREFIX(), name="a", tasks=["t"])
    layer = method.layers["bert.encoder.layer.0.attention.self"]
    assert isinstance(layer, PrefixSelfAttentionLayer)
    hidden = torch.randn(3, 6, 16)
    extended = model.bert.get_extended_attention_mask(mask, mask.shape)  # (B, 1, 1, S) additive, as eager gets it
    empty = hidden.new_zeros(3, 0, 16)
    torch.testing.assert_close(layer.attend(hidden, extended, empty, empty), layer.base(hidden, attention_mask=extended)[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(layer.attend(hidden, None, empty, empty), layer.base(hidden)[0], rtol=0, atol=1e-6)


def test_prefix_with_lora_on_the_same_attention_and_removal_order():
    """Prefix and LoRA share the explicit Attention; each removal undoes only its own part."""
    model, inputs = speech()
    ref = model(*inputs)
    lora = adapters.add_adapter(model, adapters.LoraConfig(target_modules=["@attention"]), name="lora")
    adapters.add_adapter(model, PREFIX(), name="prefix")
    perturb(model, "default")
    attention = model.enc.conformer_layers[0].self_attn.base
    assert isinstance(attention, Attention) and attention.kv_hook is not None
    adapters.remove_adapter(model, "prefix")
    assert model.enc.conformer_layers[0].self_attn is attention and attention.kv_hook is None
    lora.active = False
    torch.testing.assert_close(model(*inputs), ref, rtol=0, atol=1e-6)
    adapters.remove_adapter(model, "lora")
    assert type(model.enc.conformer_layers[0].self_attn) is nn.MultiheadAttention
    assert torch.equal(model(*inputs), ref)


def test_prefix_inactive_is_the_base_and_refusals():
    model, inputs = text()
    ref = model(*inputs)
    method = adapters.add_adapter(model, PREFIX(), name="a")
    method.active = False
    assert torch.equal(model(*inputs), ref)
    method.active = True
    with pytest.raises(ValueError, match="output_attentions"):
        model(*inputs, output_attentions=True)
    with pytest.raises(ValueError, match="already has a prefix"):
        adapters.add_adapter(model, PREFIX(), name="b")
    speech_model, _ = speech()
    with pytest.raises(TypeError, match="holds none"):
        adapters.add_adapter(speech_model, PrefixConfig(target_modules=["@ffn"]), name="a")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
                                  position_embedding_type="relative_key")
    relative = Text()
    relative.bert = transformers.BertModel(cfg, add_pooling_layer=False)
    with pytest.raises(TypeError, match="relative_key"):
        adapters.add_adapter(relative, PREFIX(), name="a")


# ---------------------------------------------------------------- both on the NLU model, as the cascade calls it


def test_prompt_and_prefix_on_the_nlu_model():
    from components.models.nlu import NluModel

    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)
    nlu = NluModel(transformers.BertModel(cfg, add_pooling_layer=False), 3, 4, 5, cls_token_id=1, sep_token_id=2).eval()
    ids, mask = torch.randint(3, 50, (2, 6)), torch.ones(2, 6, dtype=torch.long)
    word_index = torch.tensor([[1, 2, 4], [1, 3, 0]])
    embeds, word_mask = torch.randn(2, 3, 16), torch.tensor([[1, 1, 1], [1, 1, 0]])
    calls = [
        lambda: nlu(input_ids=ids, attention_mask=mask, word_index=word_index),
        lambda: nlu(inputs_embeds=embeds, word_mask=word_mask),
        lambda: nlu(inputs_embeds=embeds, word_mask=word_mask, add_special_tokens=True),  # reaches encoder.get_input_embeddings()
    ]
    refs = [call() for call in calls]
    adapters.add_adapter(nlu, PromptConfig(target_modules=["encoder:@encoder"], num_virtual_tokens=P), name="prompt")
    adapters.add_adapter(nlu, PrefixConfig(target_modules=["encoder:@attention"], num_virtual_tokens=P), name="prefix")
    for call, ref in zip(calls, refs):
        out = call()
        assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in ref.items()}
        assert not torch.allclose(out["tag_logits"], ref["tag_logits"], atol=1e-4)
    adapters.remove_adapter(nlu, "prefix")  # last on, first off: the prefix layers' paths run through the prompt wrapper
    adapters.remove_adapter(nlu, "prompt")
    for call, ref in zip(calls, refs):
        assert all(torch.equal(call()[k], ref[k]) for k in ref)
