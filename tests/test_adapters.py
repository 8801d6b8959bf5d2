"""The adapter library, table-driven over every registered method on a tiny Conformer (and a tiny BERT).

Per method: forward shapes; only adapter parameters train; zero-init methods
leave the output unchanged; save/load of one task round-trips; tasks switch
at run time and a mixed batch equals each row run with its own task;
remove_adapter restores the original module tree. Then LoRA and BitFit parity
with peft, the explicit attention, merge, and the registry's and injection's errors.
"""

from __future__ import annotations

import pytest
import torch
import torchaudio
from torch import nn

from components import adapters as A
from components.adapters.attention import Attention, explicit_attention

# method -> (config factory, starts as a no-op)
CASES = {
    "bottleneck": (lambda: A.BottleneckConfig(reduction_factor=4), True),
    "houlsby": (lambda: A.HoulsbyConfig(reduction_factor=4, placement="parallel"), True),
    "pfeiffer": (lambda: A.PfeifferConfig(reduction_factor=4, activation="gelu"), True),
    "gated": (lambda: A.GatedConfig(reduction_factor=4), True),
    "shared": (lambda: A.SharedConfig(reduction_factor=4), True),
    "lora": (lambda: A.LoraConfig(target_modules=["@linear"], r=4), True),
    "bitfit": (lambda: A.BitFitConfig(), True),
    "compacter": (lambda: A.CompacterConfig(reduction_factor=4, phm_dim=2, activation="gelu"), True),
    "hyperformer": (lambda: A.HyperformerConfig(reduction_factor=4, task_embedding_dim=8, layer_embedding_dim=8, projector_hidden=16, projected_dim=8), True),
    "hra": (lambda: A.HRAConfig(r=8), True),
    "poly": (lambda: A.PolyConfig(target_modules=["@attention", "@ffn"], r=4, n_skills=3), True),
    "mhr": (lambda: A.MhrConfig(target_modules=["@attention", "@ffn"], r=4, n_skills=3, n_splits=4), True),
    "mhr_z": (lambda: A.MhrZConfig(target_modules=["@attention", "@ffn"], r=4, n_skills=3, n_splits=4), True),
    "mhr_mu": (lambda: A.MhrMuConfig(target_modules=["@attention", "@ffn"], r=4), True),
    "prompt": (lambda: A.PromptConfig(num_virtual_tokens=4), False),
    "prefix": (lambda: A.PrefixConfig(num_virtual_tokens=4), False),
}


class TinyASR(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torchaudio.models.Conformer(input_dim=16, num_heads=4, ffn_dim=32, num_layers=2, depthwise_conv_kernel_size=3, dropout=0.0)
        self.head = nn.Linear(16, 7)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        y, _ = self.encoder(x, lengths)
        return self.head(y)  # (B, T, 7)


def tiny_bert():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertModel(config, add_pooling_layer=False)


@pytest.fixture
def model_and_batch():
    torch.manual_seed(0)
    model = TinyASR().eval()
    x, lengths = torch.randn(3, 10, 16), torch.tensor([10, 8, 5])
    return model, x, lengths


def perturb(method: A.AdapterMethod, model: nn.Module, task: str | None = None, seed: int = 1) -> None:
    """Give an adapter's parameters (one task's, or all) non-trivial values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in A.inject.adapter_named_parameters(model, method):
            if task is None or f".tasks.{task}." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.mark.parametrize("method", sorted(CASES))
def test_method_contract(method, model_and_batch, tmp_path):
    assert sorted(CASES) == sorted(A.METHODS), "every registered method is in the table"
    model, x, lengths = model_and_batch
    make_config, zero_init = CASES[method]
    reference = model(x, lengths)
    adapter = A.add_adapter(model, make_config(), name="ad", tasks=["t1", "t2"])
    A.freeze_backbone(model)

    out = model(x, lengths)
    assert out.shape == reference.shape
    if zero_init:
        torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)

    # only the adapter's (intended) parameters train, and they all get a gradient (a batch of both tasks)
    perturb(adapter, model)
    adapter.set_task(["t1", "t2", "t1"])
    model(x, lengths).square().sum().backward()
    adapter_ids = {id(p) for _, p in A.inject.adapter_named_parameters(model, adapter)}
    for name, p in model.named_parameters():
        if id(p) not in adapter_ids:
            assert not p.requires_grad and p.grad is None, name
        elif p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
    assert any(p.requires_grad for _, p in A.inject.adapter_named_parameters(model, adapter))

    # tasks switch at run time; a mixed batch equals each row with its own task
    perturb(adapter, model, task="t2", seed=2)
    with torch.no_grad():
        outs = {t: model(x, lengths) for t in ("t1", "t2") if adapter.set_task(t) is None}
        adapter.set_task(torch.tensor([0, 1, 0]))
        mixed = model(x, lengths)
    assert not torch.allclose(outs["t1"], outs["t2"]) or method == "shared"
    torch.testing.assert_close(mixed, torch.stack([outs["t1"][0], outs["t2"][1], outs["t1"][2]]), rtol=1e-5, atol=1e-5)
    # the same mixed batch again after t1's weights change in place: the change shows (nothing kept is stale)
    perturb(adapter, model, task="t1", seed=3)
    with torch.no_grad():
        again = model(x, lengths)
        adapter.set_task("t1")
        t1 = model(x, lengths)
    torch.testing.assert_close(again, torch.stack([t1[0], outs["t2"][1], t1[2]]), rtol=1e-5, atol=1e-5)

    # one task saved alone and loaded into a fresh copy of the adapter gives the same outputs
    A.save_task(model, tmp_path / "t2.safetensors", "t2", name="ad")
    A.save_shared(model, tmp_path / "shared.safetensors", name="ad")
    adapter.set_task("t2")
    expected = model(x, lengths)
    A.remove_adapter(model, "ad")
    torch.testing.assert_close(model(x, lengths), reference, rtol=0, atol=0)
    assert not any(isinstance(m, (A.AdapterLayer, Attention)) for m in model.modules()), "remove_adapter restores the tree"
    fresh = A.add_adapter(model, A.config_from_file(tmp_path / "t2.safetensors"), name="ad", tasks=[])
    A.load_shared(model, tmp_path / "shared.safetensors", name="ad")
    assert A.load_task(model, tmp_path / "t2.safetensors", name="ad") == "t2"
    fresh.set_task("t2")
    torch.testing.assert_close(model(x, lengths), expected, rtol=0, atol=1e-6)


def test_adding_a_task_leaves_the_others_untouched(model_and_batch):
    model, x, lengths = model_and_batch
    adapter = A.add_adapter(model, A.HoulsbyConfig(reduction_factor=4), tasks=["a"])
    perturb(adapter, model)
    before = {n: p.clone() for n, p in model.named_parameters()}
    out_a = model(x, lengths)
    adapter.add_task("b")
    after = dict(model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert sorted(set(after) - set(before)) and all(".tasks.b." in n for n in set(after) - set(before))
    adapter.set_task("a")
    assert torch.equal(model(x, lengths), out_a)


@pytest.mark.parametrize("method", sorted(CASES))
def test_removing_a_task_leaves_the_others_untouched(method, model_and_batch):
    """What a server with a bound on resident tasks relies on: drop one task, the rest answer as before."""
    model, x, lengths = model_and_batch
    adapter = A.add_adapter(model, CASES[method][0](), tasks=["a", "b", "c"])
    perturb(adapter, model)
    outputs = {}
    for task in ("b", "c"):
        adapter.set_task(task)
        outputs[task] = model(x, lengths)
    adapter.set_task(["b", "c", "b"])
    mixed = model(x, lengths)
    adapter.remove_task("a")
    assert adapter.task_names == ["b", "c"]
    assert not [n for n, _ in model.named_parameters() if ".tasks.a." in n or n.endswith(".tasks.a")]
    for task in ("b", "c"):
        adapter.set_task(task)
        assert torch.equal(model(x, lengths), outputs[task]), task
    adapter.set_task(["b", "c", "b"])  # ids shifted: the names still route each row
    assert torch.equal(model(x, lengths), mixed)
    with pytest.raises(KeyError, match="unknown task 'a'"):
        adapter.remove_task("a")


def test_accounting_per_task_and_module(model_and_batch):
    model, _, _ = model_and_batch
    A.add_adapter(model, A.PfeifferConfig(reduction_factor=4), name="p", tasks=["a", "b"])
    report = A.adapter_report(model)
    per_adapter = (16 * 4 + 4) + (4 * 16 + 16)  # down + up, with biases
    entry = report["adapters"]["p"]
    assert entry["tasks"] == {"a": 4 * per_adapter, "b": 4 * per_adapter}  # 2 layers x (ffn1, ffn2)
    assert entry["shared"] == 0 and entry["total"] == 8 * per_adapter
    assert set(entry["modules"]) == {f"encoder.conformer_layers.{i}.{f}" for i in range(2) for f in ("ffn1", "ffn2")}
    assert report["backbone"] + entry["total"] == report["total"]


def test_explicit_attention_equals_multihead_attention(model_and_batch):
    model, x, lengths = model_and_batch
    reference = model(x, lengths)
    for i in range(2):
        explicit_attention(model, f"encoder.conformer_layers.{i}.self_attn")
    torch.testing.assert_close(model(x, lengths), reference, rtol=0, atol=1e-6)
    model.train()
    torch.manual_seed(3)
    model(x, lengths).sum().backward()
    assert model.encoder.conformer_layers[0].self_attn.mha.in_proj_weight.grad is not None


def test_lora_on_attention_gets_gradients_and_merges(model_and_batch):
    """The pitfall: torch's MHA never calls out_proj or a q/k/v module; the explicit Attention does."""
    model, x, lengths = model_and_batch
    lora = A.add_adapter(model, A.LoraConfig(target_modules=["@attention"], r=2), name="lora")
    assert len(lora.layers) == 8 and {p.rsplit(".", 1)[-1] for p in lora.layers} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    A.freeze_backbone(model)
    perturb(lora, model)
    unmerged = model(x, lengths)
    unmerged.sum().backward()
    assert all(layer.tasks["default"]["lora_A"].weight.grad.abs().sum() > 0 for layer in lora.layers.values())
    with torch.no_grad():
        lora.merge("default")
        torch.testing.assert_close(model(x, lengths), unmerged, rtol=1e-5, atol=1e-5)
        lora.unmerge()
        torch.testing.assert_close(model(x, lengths), unmerged, rtol=1e-5, atol=1e-5)
        A.merge_and_unload(model, "lora")
    assert not any(isinstance(m, (A.AdapterLayer, Attention)) for m in model.modules()), "the original tree, MHA included"
    torch.testing.assert_close(model(x, lengths), unmerged, rtol=1e-5, atol=1e-5)


def test_lora_matches_peft():
    """Same weights -> same outputs and gradients as peft's LoRA, within 1e-6."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 12))
    ours, theirs = (TinyWrap(nn.Sequential(*_clone(base))) for _ in range(2))
    lora = A.add_adapter(ours, A.LoraConfig(target_modules=["net.0", "net.2"], r=4, alpha=8))
    A.freeze_backbone(ours)
    perturb(lora, ours)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["net.0", "net.2"], lora_dropout=0.0))
    with torch.no_grad():
        for i in (0, 2):
            mine = ours.net[i].tasks["default"]
            peft_layer = theirs.base_model.model.net[i]
            peft_layer.lora_A["default"].weight.copy_(mine["lora_A"].weight)
            peft_layer.lora_B["default"].weight.copy_(mine["lora_B"].weight)
    x = torch.randn(5, 12)
    out_ours, out_theirs = ours(x), theirs(x)
    torch.testing.assert_close(out_ours, out_theirs, rtol=0, atol=1e-6)
    out_ours.square().sum().backward()
    out_theirs.square().sum().backward()
    for i in (0, 2):
        for m in ("lora_A", "lora_B"):
            torch.testing.assert_close(ours.net[i].tasks["default"][m].weight.grad, getattr(theirs.base_model.model.net[i], m)["default"].weight.grad, rtol=0, atol=1e-6)
    ours_count = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert ours_count == theirs.get_nb_trainable_parameters()[0]


def test_bitfit_matches_peft_bias_parameters():
    """BitFit's offsets sit exactly where peft's bias='all' trains biases, and get the same gradients."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv1d(4, 8, 3, padding=1), ConvToLast(), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 3, bias=False))
    ours, theirs, plain = (TinyWrap(nn.Sequential(*_clone(base))) for _ in range(3))
    A.add_adapter(ours, A.BitFitConfig(target_modules=["net"]))
    A.freeze_backbone(ours)
    theirs = peft.get_peft_model(theirs, peft.LoraConfig(r=1, target_modules=["net.3"], bias="all"))
    peft_biases = {n.replace("base_model.model.", "").removesuffix(".base_layer.bias").removesuffix(".bias") for n, p in theirs.named_parameters() if p.requires_grad and "lora_" not in n}
    ours_offsets = {n.split(".tasks.")[0] for n, p in ours.named_parameters() if p.requires_grad}
    assert ours_offsets == peft_biases == {"net.0", "net.2", "net.3"}
    x = torch.randn(2, 4, 5)
    ours(x).square().sum().backward()
    plain(x).square().sum().backward()
    for i in (0, 2, 3):
        torch.testing.assert_close(ours.net[i].tasks["default"].bias.grad, plain.net[i].bias.grad, rtol=0, atol=1e-6)


class TinyWrap(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


class ConvToLast(nn.Module):
    def forward(self, x):  # (B, C, L) -> (B, L, C)
        return x.transpose(1, 2)


def _clone(seq: nn.Sequential) -> list[nn.Module]:
    import copy

    return [copy.deepcopy(m) for m in seq]


def test_roles_resolve_on_bert_and_conformer():
    model = nn.Module()
    model.asr, model.nlu = TinyASR(), TinyWrap(tiny_bert())
    targets = [p for p, _ in A.find_targets(model, ["asr:@ffn"])]
    assert targets == [f"asr.encoder.conformer_layers.{i}.ffn{j}" for i in range(2) for j in (1, 2)]
    assert [p for p, _ in A.find_targets(model, ["nlu:@attention"])] == [f"nlu.net.encoder.layer.{i}.attention" for i in range(2)]
    assert [p for p, _ in A.find_targets(model, ["asr:@encoder_layer"])] == [f"asr.encoder.conformer_layers.{i}" for i in range(2)]
    with pytest.raises(ValueError, match="role '@cross_attention' is not defined .* their roles: attention, encoder, encoder_layer, ffn, layer, linear$"):
        A.find_targets(model, ["asr:@cross_attention"])
    lora = A.add_adapter(model, A.LoraConfig(target_modules=["nlu:@attention"]))
    assert sorted({p.rsplit(".", 1)[-1] for p in lora.layers}) == ["dense", "key", "query", "value"]


def test_bert_adapter_shapes_and_zero_init():
    torch.manual_seed(0)
    model = TinyWrap(tiny_bert()).eval()
    ids = torch.randint(0, 50, (2, 6))
    reference = model.net(input_ids=ids).last_hidden_state
    A.add_adapter(model, A.HoulsbyConfig(reduction_factor=4), tasks=["x"])
    torch.testing.assert_close(model.net(input_ids=ids).last_hidden_state, reference, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "config, message",
    [
        (A.HoulsbyConfig(target_modules=["encoder.conformer_layers.*.ffn3"]), "matches no module"),
        (A.HoulsbyConfig(target_modules=["@decoder"]), "role '@decoder'"),
        (A.LoraConfig(target_modules=["encoder.conformer_layers.0.conv_module.sequential.2"]), "lora adapts Linear layers; target .* holds none"),
        (A.LoraConfig(target_modules=[]), "target_modules is empty"),
        (A.LoraConfig(r=0), "r must be a positive int"),
        (A.BottleneckConfig(placement="beside"), "placement must be"),
    ],
)
def test_bad_configs_say_what_is_wrong(model_and_batch, config, message):
    model, _, _ = model_and_batch
    with pytest.raises((ValueError, TypeError), match=message):
        A.add_adapter(model, config)


def test_wrong_task_and_duplicate_names_are_refused(model_and_batch):
    model, x, lengths = model_and_batch
    adapter = A.add_adapter(model, A.PfeifferConfig(), tasks=["a"])
    with pytest.raises(KeyError, match="unknown task 'b'"):
        adapter.set_task("b")
    with pytest.raises(ValueError, match="out of range"):
        adapter.set_task(torch.tensor([0, 3, 0]))
    with pytest.raises(ValueError, match="already exists"):
        adapter.add_task("a")
    with pytest.raises(ValueError, match="already applied"):
        A.add_adapter(model, A.PfeifferConfig(), tasks=["a"])


def test_registry_refuses_bad_and_duplicate_registrations():
    from dataclasses import dataclass

    with pytest.raises(A.RegistryError, match="already registered"):
        A.register(type("Again", (A.AdapterMethod,), {"config_cls": A.LoraConfig}))

    @dataclass
    class NoHelp(A.AdapterConfig):
        method = "no_help"
        width: int = 3

    with pytest.raises(A.RegistryError, match="without help"):
        A.register(type("NoHelpMethod", (A.AdapterMethod,), {"config_cls": NoHelp}))
    with pytest.raises(A.RegistryError, match="not an AdapterMethod"):
        A.register(object)
    assert "no_help" not in A.METHODS


def test_task_file_of_another_method_is_refused(model_and_batch, tmp_path):
    model, _, _ = model_and_batch
    A.add_adapter(model, A.PfeifferConfig(), name="p", tasks=["a"])
    A.save_task(model, tmp_path / "a.safetensors", "a", name="p")
    A.add_adapter(model, A.LoraConfig(), name="l", tasks=[])
    with pytest.raises(ValueError, match="saved from method 'pfeiffer'"):
        A.load_task(model, tmp_path / "a.safetensors", name="l")


def test_adapters_come_off_in_any_order():
    """Prompt wraps the whole encoder, LoRA sits inside it: removing the outer one first must not strand the inner one."""
    torch.manual_seed(0)
    model = TinyWrap(tiny_bert()).eval()
    ids = torch.randint(0, 50, (2, 6))
    reference = model.net(input_ids=ids).last_hidden_state
    A.add_adapter(model, A.PromptConfig(target_modules=["net"], num_virtual_tokens=2), name="prompt")
    lora = A.add_adapter(model, A.LoraConfig(target_modules=["@attention"], r=2), name="lora")
    perturb(lora, model)
    assert model.net.config.hidden_size == 16, "the wrapped HF model keeps its own .config"
    A.remove_adapter(model, "prompt")
    A.remove_adapter(model, "lora")
    assert not any(isinstance(m, A.AdapterLayer) for m in model.modules())
    torch.testing.assert_close(model.net(input_ids=ids).last_hidden_state, reference, rtol=0, atol=0)


def test_a_sequential_root_is_refused():
    with pytest.raises(TypeError, match="not a Sequential .* wrap it in a module"):
        A.add_adapter(nn.Sequential(nn.Linear(2, 2)), A.LoraConfig(target_modules=["0"]))
