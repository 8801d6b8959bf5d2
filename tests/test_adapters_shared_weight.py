"""Adapters whose weights are shared across layers and tasks: Compacter, Hyperformer, HRA.

Compacter: PHM projections W = sum_i A_i kron B_i (A_i shared by every layer);
Hyperformer: one hypernetwork writes every layer's adapter from a task and a
layer embedding; HRA (hierarchical recurrent adapter, not peft's Householder
HRA): one IndRNN controller over depth shared by all layers and tasks, a head
per task. The contract every method keeps (shapes, zero-init, training only
the adapter, tasks, mixed batches, save/load, removal) and each one's own
structure: parameter counts by hand, sharing, the recurrence.
"""

from __future__ import annotations

import pytest
import torch
import torchaudio
from torch import nn

from components import adapters as A
from components.adapters.compacter import CompacterConfig, PHMLinear, kron_sum
from components.adapters.compacter.layer import PHMRule
from components.adapters.hra import HRAConfig, IndRNNController
from components.adapters.hyperformer import HyperformerConfig
from components.adapters.inject import adapter_named_parameters

D, H = 16, 4  # tiny Conformer width; bottleneck width at reduction_factor 4

# Compacter's perturbed down weights are products of three small factors (A, s, t): a smooth activation keeps every
# unit alive, so every parameter gets a gradient in the contract test (a ReLU may go all-dead at a 4-unit bottleneck)
CASES = {
    "compacter": lambda: CompacterConfig(reduction_factor=4, phm_dim=2, activation="gelu"),
    "phm_adapter": lambda: CompacterConfig(reduction_factor=4, phm_dim=4, low_rank=0, placement="parallel", activation="tanh"),
    "compacter_task_rule": lambda: CompacterConfig(reduction_factor=4, phm_dim=2, share_phm_rule=False, gated=True, activation="gelu"),
    "hyperformer": lambda: HyperformerConfig(reduction_factor=4, task_embedding_dim=6, layer_embedding_dim=4, projector_hidden=12, projected_dim=8),
    "hra": lambda: HRAConfig(r=8),
    "hra_ffn": lambda: HRAConfig(r=8, head="ffn", ffn_dim=12),
}


class TinyASR(nn.Module):
    def __init__(self, num_layers: int = 2) -> None:
        super().__init__()
        self.encoder = torchaudio.models.Conformer(input_dim=D, num_heads=4, ffn_dim=32, num_layers=num_layers, depthwise_conv_kernel_size=3, dropout=0.0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, lengths)[0]  # (B, T, D)


def batch():
    return torch.randn(3, 7, D), torch.tensor([7, 5, 3])


def perturb(model: nn.Module, method: A.AdapterMethod, task: str | None = None, seed: int = 1) -> None:
    """Non-trivial values for the adapter's parameters (one task's, or all of them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter_named_parameters(model, method):
            if task is None or f".tasks.{task}." in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture
def asr():
    torch.manual_seed(0)
    model = TinyASR().eval()
    x, lengths = batch()
    return model, x, lengths


# -- the contract, for every method and variant ---------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_contract(case, asr, tmp_path):
    model, x, lengths = asr
    reference = model(x, lengths)
    names_before = set(model.state_dict())
    method = A.add_adapter(model, CASES[case](), name="ad", tasks=["a", "b"])
    A.freeze_backbone(model)

    # shapes, and all three start as a no-op (zero-init): exactly the backbone's output
    out = model(x, lengths)
    assert out.shape == reference.shape
    assert torch.equal(out, reference)

    # only adapter parameters train, and every one of them gets a gradient from a mixed batch
    perturb(model, method)
    method.set_task(["a", "b", "a"])
    model(x, lengths).square().sum().backward()
    ours = {id(p) for _, p in adapter_named_parameters(model, method)}
    for name, p in model.named_parameters():
        if id(p) in ours:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, f"{name} gets no gradient"
        else:
            assert not p.requires_grad and p.grad is None, name

    # tasks switch; a mixed batch equals each row run with its own task
    with torch.no_grad():
        outs = {}
        for task in ("a", "b"):
            method.set_task(task)
            outs[task] = model(x, lengths)
        method.set_task(torch.tensor([1, 0, 1]))
        mixed = model(x, lengths)
    assert not torch.allclose(outs["a"], outs["b"])
    torch.testing.assert_close(mixed, torch.stack([outs["b"][0], outs["a"][1], outs["b"][2]]), rtol=1e-5, atol=1e-5)

    # one task's file restores that task's outputs after its parameters changed
    A.save_task(model, tmp_path / "b.safetensors", "b", name="ad")
    perturb(model, method, task="b", seed=5)
    method.set_task("b")
    with torch.no_grad():
        assert not torch.allclose(model(x, lengths), outs["b"])
        assert A.load_task(model, tmp_path / "b.safetensors", name="ad") == "b"
        assert torch.equal(model(x, lengths), outs["b"])

    # removal gives back the backbone exactly
    A.remove_adapter(model, "ad")
    assert set(model.state_dict()) == names_before
    assert not any(isinstance(m, A.AdapterLayer) for m in model.modules())
    assert torch.equal(model(x, lengths), reference)


@pytest.mark.parametrize("case", sorted(CASES))
def test_adding_a_task_later_leaves_the_others_bit_identical(case, asr):
    model, x, lengths = asr
    method = A.add_adapter(model, CASES[case](), tasks=["a"])
    perturb(model, method)
    with torch.no_grad():
        before = model(x, lengths)
        method.add_task("late")
        method.set_task("a")
        assert torch.equal(model(x, lengths), before)


@pytest.mark.parametrize("case", ["compacter", "hyperformer", "hra"])
def test_bert_layers(case):
    """A tiny BERT (batch-first, tuple outputs): shapes and the zero-init no-op."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=D, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = nn.Module()
    model.bert = BertModel(config, add_pooling_layer=False).eval()
    ids = torch.randint(0, 50, (2, 6))
    reference = model.bert(input_ids=ids).last_hidden_state
    method = A.add_adapter(model, CASES[case](), tasks=["a"])
    assert torch.equal(model.bert(input_ids=ids).last_hidden_state, reference)
    perturb(model, method)
    out = model.bert(input_ids=ids).last_hidden_state
    assert out.shape == reference.shape and not torch.allclose(out, reference)


# -- Compacter ---------------------------------------------------------------------------------------


def test_kron_sum_equals_explicit_dense_matrix():
    torch.manual_seed(0)
    n, p, q = 2, 3, 5
    A_, B_ = torch.randn(n, n, n), torch.randn(n, p, q)
    explicit = sum(torch.kron(A_[i], B_[i]) for i in range(n))
    assert explicit.shape == (n * p, n * q)
    torch.testing.assert_close(kron_sum(A_, B_), explicit, rtol=0, atol=1e-6)

    # a low-rank PHM layer's dense weight and forward, against the same explicit formula
    layer = PHMLinear(in_features=n * q, out_features=n * p, rule=PHMRule(n), rank=2)
    with torch.no_grad():
        layer.bias.normal_()
    dense = sum(torch.kron(layer.rule.A[i], layer.s[i] @ layer.t[i]) for i in range(n))
    torch.testing.assert_close(layer.weight, dense, rtol=0, atol=1e-6)
    x = torch.randn(4, n * q)
    torch.testing.assert_close(layer(x), x @ dense.T + layer.bias, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, per_target, shared, task_own",
    [
        # rank 1: down s (n, H/n, 1) + t (n, 1, D/n) = H + D, up the same; biases H + D; one rule of n^3
        (dict(phm_dim=2), 2 * (H + D) + H + D, 2**3, 0),
        (dict(phm_dim=2, low_rank=3), 2 * 3 * (H + D) + H + D, 2**3, 0),
        # PHM-Adapter: full B_i (n, H/n, D/n): H*D/n per projection
        (dict(phm_dim=4, low_rank=0), 2 * H * D // 4 + H + D, 4**3, 0),
        # one rule per task, shared by that task's layers: n^3 moves from shared to each task; gate: +1 a target
        (dict(phm_dim=2, share_phm_rule=False, gated=True), 2 * (H + D) + H + D + 1, 0, 2**3),
    ],
)
def test_compacter_parameter_count_by_hand(asr, kwargs, per_target, shared, task_own):
    model, _, _ = asr
    method = A.add_adapter(model, CompacterConfig(reduction_factor=4, **kwargs), name="c", tasks=["a", "b"])
    targets = 2 * 3  # 2 Conformer layers x (self_attn, ffn1, ffn2): Houlsby's places
    assert len(method.layers) == targets
    entry = A.adapter_report(model)["adapters"]["c"]
    assert entry["shared"] == shared
    assert entry["tasks"] == {"a": targets * per_target + task_own, "b": targets * per_target + task_own}
    assert entry["total"] == shared + 2 * (targets * per_target + task_own)


def test_compacter_rule_is_one_tensor_for_all_layers_and_up_starts_at_zero(asr):
    model, _, _ = asr
    method = A.add_adapter(model, CompacterConfig(reduction_factor=4, phm_dim=2), tasks=["a", "b"])
    phm = [m for m in model.modules() if isinstance(m, PHMLinear)]
    assert len(phm) == 6 * 2 * 2  # targets x (down, up) x tasks
    assert all(m.rule is method.shared["phm_rule"] for m in phm)
    assert sum(1 for n, _ in model.named_parameters() if n.endswith(".A")) == 1
    for layer in method.layers.values():
        for task in ("a", "b"):
            up = layer.tasks[task].up
            assert torch.count_nonzero(up.weight) == 0 and torch.count_nonzero(up.bias) == 0
            assert torch.count_nonzero(layer.tasks[task].down.weight) > 0


def test_compacter_phm_dim_must_divide_the_widths(asr):
    model, _, _ = asr
    with pytest.raises(ValueError, match=r"phm_dim 3 must divide the width 16 .* bottleneck width 4"):
        A.add_adapter(model, CompacterConfig(reduction_factor=4, phm_dim=3))
    with pytest.raises(ValueError, match=r"phm_dim 8 must divide .* bottleneck width 4"):  # 16 is fine, 4 is not
        A.add_adapter(model, CompacterConfig(reduction_factor=4, phm_dim=8))
    with pytest.raises(ValueError, match="phm_dim must be a positive int"):
        A.add_adapter(model, CompacterConfig(phm_dim=0))
    assert not any(isinstance(m, A.AdapterLayer) for m in model.modules())  # refused before wrapping anything


# -- Hyperformer ---------------------------------------------------------------------------------------


def test_hyperformer_new_task_costs_one_task_embedding(asr):
    model, _, _ = asr
    config = CASES["hyperformer"]()
    method = A.add_adapter(model, config, name="h", tasks=["a"])
    before = A.adapter_report(model)["adapters"]["h"]
    method.add_task("b")
    after = A.adapter_report(model)["adapters"]["h"]
    assert after["total"] - before["total"] == config.task_embedding_dim
    assert after["tasks"] == {"a": config.task_embedding_dim, "b": config.task_embedding_dim}
    assert after["shared"] == before["shared"] > 0
    assert all(sum(p.numel() for p in layer.tasks.parameters()) == 0 for layer in method.layers.values())


def test_hyperformer_generates_per_task_and_per_layer(asr):
    model, x, lengths = asr
    method = A.add_adapter(model, CASES["hyperformer"](), name="h", tasks=["a", "b"])
    # zero-init: whatever the embeddings, the generated up weights and bias are exactly 0
    for task in ("a", "b"):
        for depth in range(len(method.layers)):
            _, _, W_up, b_up = method.generate(task, depth, D)
            assert torch.count_nonzero(W_up) == 0 and torch.count_nonzero(b_up) == 0
    perturb(model, method, task=None)
    with torch.no_grad():
        # different embeddings -> different adapters; different depths -> different adapters
        assert not torch.allclose(method.generate("a", 0, D)[2], method.generate("b", 0, D)[2])
        assert not torch.allclose(method.generate("a", 0, D)[2], method.generate("a", 1, D)[2])
        # the embedding is all a task is: copy a's into b and b becomes a
        method.set_task("a")
        out_a = model(x, lengths)
        method.tasks["b"].embedding.copy_(method.tasks["a"].embedding)
        method.set_task("b")
        assert torch.equal(model(x, lengths), out_a)


# -- HRA (hierarchical recurrent adapter) -----------------------------------------------------------------


def _controller_count(model: nn.Module) -> int:
    return sum(isinstance(m, IndRNNController) for m in model.modules())


@pytest.mark.parametrize("num_layers, tasks", [(2, ["a"]), (3, ["a", "b", "c"])])
@pytest.mark.parametrize("head", ["linear", "ffn"])
def test_hra_one_controller_and_one_head_a_task(num_layers, tasks, head):
    torch.manual_seed(0)
    model = TinyASR(num_layers)
    r, f = 8, 12
    method = A.add_adapter(model, HRAConfig(r=r, head=head, ffn_dim=f), name="hra", tasks=tasks)
    assert len(method.layers) == num_layers and [layer.depth for layer in method.layers.values()] == list(range(num_layers))
    head_size = r * D + D if head == "linear" else r * f + f + f * D + D
    entry = A.adapter_report(model)["adapters"]["hra"]
    assert _controller_count(model) == 1
    assert entry["shared"] == r * D + r + r  # W (r, d), b (r,), u (r,): one copy, whatever the layers and tasks
    assert entry["tasks"] == {t: head_size for t in tasks}
    method.add_task("new")
    grown = A.adapter_report(model)["adapters"]["hra"]
    assert grown["total"] - entry["total"] == head_size and grown["shared"] == entry["shared"]
    assert _controller_count(model) == 1


class TwoBranches(nn.Module):
    """y = l0(x) + l1(x): l1's own output does not depend on l0, so only the controller's state links them."""

    def __init__(self) -> None:
        super().__init__()
        self.l0, self.l1 = nn.Linear(6, 6), nn.Linear(6, 6)

    def forward(self, x):
        return self.l0(x) + self.l1(x)


def test_hra_recurs_over_depth():
    torch.manual_seed(0)
    model = TwoBranches()
    method = A.add_adapter(model, HRAConfig(target_modules=["l0", "l1"], r=5), tasks=["a"])
    perturb(model, method)
    with torch.no_grad():
        method.shared["controller"].u.copy_(torch.linspace(0.2, 1.0, 5))
    layer1 = model.l1
    seen = {}
    layer1.register_forward_hook(lambda m, args, out: seen.__setitem__("adapted", out))
    layer1.base.register_forward_hook(lambda m, args, out: seen.__setitem__("base", out))
    x = torch.randn(4, 6)

    def residual_of_layer_1():
        with torch.no_grad():
            model(x)
        return seen["adapted"] - seen["base"]

    first = residual_of_layer_1()
    base_first = seen["base"].clone()
    with torch.no_grad():
        model.l0.base.weight.add_(torch.randn(6, 6))  # layer 0's output changes, layer 1's does not
    second = residual_of_layer_1()
    assert torch.equal(seen["base"], base_first)
    assert not torch.allclose(first, second), "layer 1's residual must see layer 0 through h"
    # without the recurrent weight u the link is gone
    with torch.no_grad():
        method.shared["controller"].u.zero_()
    third = residual_of_layer_1()
    with torch.no_grad():
        model.l0.base.weight.sub_(1.0)
    torch.testing.assert_close(residual_of_layer_1(), third, rtol=0, atol=0)


def test_hra_input_norm_makes_the_controller_blind_to_the_scale_of_a_layer_output():
    from components.adapters.hra.layer import IndRNNController

    torch.manual_seed(0)
    x, h_prev = torch.randn(3, 7, 16), torch.rand(3, 7, 8)
    normed, plain = IndRNNController(16, 8, input_norm=True), IndRNNController(16, 8)
    plain.load_state_dict(normed.state_dict())  # no parameters of its own: the same weights load into both
    torch.testing.assert_close(normed(x * 50.0, h_prev), normed(x, h_prev), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(plain(x * 50.0, h_prev), plain(x, h_prev))
    xn = nn.functional.layer_norm(x, (16,))
    torch.testing.assert_close(normed(x, h_prev), plain(xn, h_prev), rtol=0, atol=0)


def test_hra_state_resets_each_pass_and_refuses_out_of_order_layers():
    torch.manual_seed(0)
    model = TwoBranches()
    method = A.add_adapter(model, HRAConfig(target_modules=["l0", "l1"], r=5), tasks=["a"])
    perturb(model, method)
    x = torch.randn(2, 6)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # depth 0 resets: the second pass does not see the first
        assert method._state is None  # the last layer drops the state (and its graph)
        with pytest.raises(RuntimeError, match=r"'l1' \(depth 1\) ran after nothing"):
            model.l1(x)


def test_hra_needs_one_width():
    model = nn.Module()
    model.a, model.b = nn.Linear(4, 4), nn.Linear(4, 6)
    with pytest.raises(ValueError, match="must share one width"):
        A.add_adapter(model, HRAConfig(target_modules=["a", "b"], r=3))
    with pytest.raises(ValueError, match="head must be one of"):
        A.add_adapter(model, HRAConfig(target_modules=["a"], head="conv"))
