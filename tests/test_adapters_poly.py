"""Poly / MHR / MHR-z / MHR-mu: parity with peft's poly tuner, routing-only training, the averaged inventory."""

from __future__ import annotations

import copy

import pytest
import torch
import torchaudio
import transformers
from torch import nn

from components.adapters import adapter_report, add_adapter, config_from_file, freeze_backbone, load_shared, load_task, remove_adapter, save_shared, save_task
from components.adapters.poly import MhrConfig, MhrMuConfig, MhrZConfig, PolyConfig, average_inventory, mixing_weights


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class ConformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = torchaudio.models.Conformer(input_dim=16, num_heads=4, ffn_dim=32, num_layers=2, depthwise_conv_kernel_size=3)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.encoder(x, lengths)[0]


class BertNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=32)
        self.bert = transformers.BertModel(config, add_pooling_layer=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids).last_hidden_state


def conformer() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    return ConformerNet().eval(), (torch.randn(3, 7, 16), torch.tensor([7, 5, 6]))


def add(model: nn.Module, config, name: str, tasks=("default",)):
    """add_adapter on a model in eval: the new layers must start in eval too (sigmoid routing, no samples)."""
    assert not model.training
    method = add_adapter(model, config, name=name, tasks=tasks)
    assert not any(layer.training for layer in method.layers.values())
    return method


@torch.no_grad()
def randomise(method, scale: float = 0.3) -> None:
    """A 'trained' adapter: non-zero B and distinct routing per task."""
    for layer in method.layers.values():
        layer.lora_B.normal_(0, scale)
        for task in layer.tasks.values():
            task.logits.normal_()


# -- parity with peft ------------------------------------------------------------------------------------------------


def peft_pair(n_splits: int, method_config=PolyConfig):
    from peft import PolyConfig as PeftPolyConfig
    from peft.tuners.poly import PolyModel

    torch.manual_seed(0)
    base = Tiny()
    ours = copy.deepcopy(base)
    theirs = PolyModel(base, PeftPolyConfig(target_modules=["fc1", "fc2"], r=4, n_tasks=2, n_skills=3, n_splits=n_splits), "default")
    method = add_adapter(ours, method_config(target_modules=["fc1", "fc2"], r=4, n_skills=3, n_splits=n_splits), name="poly", tasks=["a", "b"])
    freeze_backbone(ours)
    with torch.no_grad():
        for path in ("fc1", "fc2"):
            peft_layer, layer = theirs.model.get_submodule(path), method.layers[path]
            peft_layer.poly_lora_B["default"].normal_(0, 0.3)
            logits = peft_layer.poly_router["default"].module_logits
            logits.normal_()
            layer.lora_A.copy_(peft_layer.poly_lora_A["default"])
            layer.lora_B.copy_(peft_layer.poly_lora_B["default"])
            for i, task in enumerate(["a", "b"]):
                layer.tasks[task].logits.copy_(logits[i])
    return theirs, ours, method


def grads(theirs, ours, method) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, peft's gradient, ours) for the inventory and the routing of every layer."""
    out = []
    for path in ("fc1", "fc2"):
        peft_layer, layer = theirs.model.get_submodule(path), method.layers[path]
        out.append((f"{path}.A", peft_layer.poly_lora_A["default"].grad, layer.lora_A.grad))
        out.append((f"{path}.B", peft_layer.poly_lora_B["default"].grad, layer.lora_B.grad))
        logits = [layer.tasks[t].logits for t in ("a", "b")]
        table = torch.stack([torch.zeros_like(p) if p.grad is None else p.grad for p in logits])  # a task not in the batch: no grad
        out.append((f"{path}.logits", peft_layer.poly_router["default"].module_logits.grad, table))
    return out


@pytest.mark.parametrize("n_splits", [1, 4], ids=["poly", "mhr"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("task_ids", [[0, 1, 1, 0], [1, 1, 1, 1]], ids=["mixed", "one_task"])
def test_peft_parity_outputs_and_gradients(n_splits, training, task_ids):
    theirs, ours, method = peft_pair(n_splits, PolyConfig if n_splits == 1 else MhrConfig)
    theirs.train(training), ours.train(training)
    x = torch.randn(4, 5, 16)
    ids = torch.tensor(task_ids)  # one task: ours mixes a single A, B for the whole batch in eval
    weight = torch.randn(4, 5, 16)
    # in training both draw one relaxed-Bernoulli sample (B, S, K) per layer in the same order: same seed, same samples
    torch.manual_seed(1)
    y_theirs = theirs(x, task_ids=ids)
    method.set_task(ids)
    torch.manual_seed(1)
    y_ours = ours(x)
    assert torch.allclose(y_ours, y_theirs, atol=1e-6), (y_ours - y_theirs).abs().max()
    (y_theirs * weight).sum().backward()
    (y_ours * weight).sum().backward()
    for name, g_theirs, g_ours in grads(theirs, ours, method):
        assert g_ours is not None and g_ours.abs().sum() > 0, name
        assert torch.allclose(g_ours, g_theirs, atol=1e-6), (name, (g_ours - g_theirs).abs().max())


# -- the library contract --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [PolyConfig(target_modules=["@attention", "@ffn"], r=4, n_skills=3), MhrConfig(target_modules=["@attention", "@ffn"], r=4, n_skills=3, n_splits=4)])
def test_conformer_zero_init_shapes_and_mixed_batch(config):
    model, (x, _) = conformer()
    inputs = (x, torch.full((3,), 7))  # unpadded: a row run alone sees the same frames as in the batch
    with torch.no_grad():
        before = model(*inputs)
        method = add(model, config, name="poly", tasks=["a", "b"])
        assert {l.batch_dim for p, l in method.layers.items() if ".ffn" in p} == {1}  # (T, B, d) inside the layers
        assert torch.equal(model(*inputs), before)  # zero-init: B starts at zero
        randomise(method)
        ids = torch.tensor([1, 0, 1])
        method.set_task(ids)
        mixed = model(*inputs)
        assert mixed.shape == before.shape
        for row, task in enumerate(["b", "a", "b"]):
            method.set_task(task)
            alone = model(inputs[0][row : row + 1], inputs[1][row : row + 1])
            assert torch.allclose(mixed[row : row + 1], alone, atol=1e-5)
        method.set_task("a")
        a = model(*inputs)
        method.set_task("b")
        assert not torch.allclose(model(*inputs), a)  # tasks differ only by their routing


def test_bert_mhr_shapes_and_zero_init():
    torch.manual_seed(0)
    model, ids = BertNet().eval(), torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        before = model(ids)
        method = add(model, MhrConfig(target_modules=["@attention"], r=2, n_splits=4), name="mhr", tasks=["a"])
        assert len(method.layers) == 2 * 4  # query, key, value, output.dense per layer
        assert torch.equal(model(ids), before)
        randomise(method)
        assert model(ids).shape == before.shape and not torch.allclose(model(ids), before)


def test_freeze_backbone_and_a_task_adds_only_routing():
    model, inputs = conformer()
    method = add(model, MhrConfig(target_modules=["@ffn"], r=4, n_skills=3, n_splits=2), name="mhr", tasks=["a", "b"])
    freeze_backbone(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B", "logits")) for n in trainable)
    assert sum(n.endswith("logits") for n in trainable) == 2 * len(method.layers)
    report = adapter_report(model)["adapters"]["mhr"]
    assert report["tasks"] == {"a": 2 * 3 * len(method.layers), "b": 2 * 3 * len(method.layers)}  # n_splits * n_skills a layer
    assert report["shared"] == sum(l.lora_A.numel() + l.lora_B.numel() for l in method.layers.values())


def test_save_task_round_trip_restores_outputs(tmp_path):
    model, inputs = conformer()
    method = add(model, MhrConfig(target_modules=["@attention"], r=4, n_skills=3, n_splits=4), name="mhr", tasks=["a"])
    randomise(method)
    with torch.no_grad():
        expected = model(*inputs)
        path = save_task(model, tmp_path / "a.safetensors", "a", name="mhr")
        for layer in method.layers.values():
            layer.tasks["a"].logits.normal_()
        assert not torch.allclose(model(*inputs), expected)
        load_task(model, path, name="mhr")
        assert torch.equal(model(*inputs), expected)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert {k.split("|")[1] for k in f.keys()} == {"logits"}  # a task file holds only routing


def test_remove_adapter_restores_exactly():
    model, inputs = conformer()
    with torch.no_grad():
        before = model(*inputs)
        method = add(model, MhrConfig(target_modules=["@attention", "@ffn"], r=4, n_splits=2), name="mhr", tasks=["a"])
        randomise(method)
        assert not torch.allclose(model(*inputs), before)
        remove_adapter(model, "mhr")
        assert torch.equal(model(*inputs), before)
    assert isinstance(model.encoder.conformer_layers[0].self_attn, nn.MultiheadAttention)


def test_mhr_needs_divisible_features():
    with pytest.raises(ValueError, match="not divisible by n_splits 3"):
        add_adapter(Tiny(), MhrConfig(target_modules=["fc1"], n_splits=3), name="mhr")


def test_training_samples_routing_per_row():
    torch.manual_seed(0)
    model = Tiny()
    method = add_adapter(model, PolyConfig(target_modules=["fc1"], r=4, n_skills=3), name="poly", tasks=["a"])
    randomise(method)
    x = torch.randn(1, 2, 16).expand(4, 2, 16)  # four identical rows
    model.train()
    y = model(x)
    assert not torch.allclose(y[0], y[1])  # each row drew its own relaxed-Bernoulli routing
    model.eval()
    y = model(x)
    assert torch.allclose(y[0], y[1])  # eval: sigmoid, deterministic
    w = mixing_weights(torch.randn(5, 2, 3), training=True)
    assert torch.allclose(w.sum(-1), torch.ones(5, 2))


# -- MHR-z -----------------------------------------------------------------------------------------------------------


def test_mhr_z_trains_only_routing_on_a_loaded_inventory(tmp_path):
    model, inputs = conformer()
    source_model = copy.deepcopy(model)
    source = add(source_model, MhrConfig(target_modules=["@attention"], r=4, n_skills=3, n_splits=4), name="mhr", tasks=["a"])
    randomise(source)
    path = save_shared(source_model, tmp_path / "inventory.safetensors", name="mhr")

    method = add(model, MhrZConfig.from_dict(config_from_file(path).to_dict()), name="z", tasks=["a"])
    load_shared(model, path, name="z")
    freeze_backbone(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{p}.tasks.a.logits" for p in method.layers}
    with torch.no_grad():
        for p, layer in method.layers.items():
            layer.tasks["a"].logits.copy_(source.layers[p].tasks["a"].logits)
        assert torch.equal(model(*inputs), source_model(*inputs))  # same inventory, same routing

    inventory = {p: (l.lora_A.clone(), l.lora_B.clone()) for p, l in method.layers.items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(*inputs).square().sum().backward()
    for layer in method.layers.values():
        assert layer.lora_A.grad is None and layer.lora_B.grad is None
        assert layer.tasks["a"].logits.grad.abs().sum() > 0
    optimizer.step()
    for p, layer in method.layers.items():
        assert torch.equal(layer.lora_A, inventory[p][0]) and torch.equal(layer.lora_B, inventory[p][1])

    other, _ = conformer()
    add_adapter(other, MhrZConfig(target_modules=["@attention"], r=4, n_skills=3, n_splits=2), name="z")
    with pytest.raises(ValueError, match="has shape"):
        load_shared(other, path, name="z")


# -- MHR-mu ----------------------------------------------------------------------------------------------------------


def test_mhr_mu_starts_from_the_averaged_inventory():
    model, inputs = conformer()
    with torch.no_grad():
        plain = model(*inputs)
        source = add(model, MhrConfig(target_modules=["@attention", "@ffn"], r=4, n_skills=3, n_splits=2), name="mhr", tasks=["a"])
        randomise(source)
        for layer in source.layers.values():
            layer.tasks["a"].logits.zero_()  # uniform routing: each head's skills weigh 1/n_skills
        averaged = model(*inputs)
        assert not torch.allclose(averaged, plain)
        paths = sorted(source.layers)

        method = average_inventory(model, "mhr", name="mu", tasks=["x", "y"])
        assert list(model.adapters) == ["mu"] and sorted(method.layers) == paths
        for task in ("x", "y"):
            method.set_task(task)
            assert torch.allclose(model(*inputs), averaged, atol=1e-6)
        method.add_task("z")  # a later task starts from the average too
        method.set_task("z")
        assert torch.allclose(model(*inputs), averaged, atol=1e-6)

    freeze_backbone(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".tasks." in n and n.endswith(("lora_A.weight", "lora_B.weight")) for n in trainable)
    with torch.no_grad():
        remove_adapter(model, "mu")
        assert torch.equal(model(*inputs), plain)


def test_mhr_mu_without_source_is_a_zero_init_lora():
    model, inputs = conformer()
    with torch.no_grad():
        before = model(*inputs)
        method = add(model, MhrMuConfig(target_modules=["@ffn"], r=4), name="mu", tasks=["a", "b"])
        assert torch.equal(model(*inputs), before)
        layer = next(iter(method.layers.values()))
        assert torch.equal(layer.tasks["a"]["lora_A"].weight, layer.tasks["b"]["lora_A"].weight)  # both from mu_A


def test_average_inventory_is_the_mean_over_skills_per_head():
    torch.manual_seed(0)
    model = Tiny()
    source = add_adapter(model, MhrConfig(target_modules=["fc1"], r=4, n_skills=3, n_splits=2), name="mhr", tasks=["a"])
    randomise(source)
    A, B = source.layers["fc1"].lora_A.clone(), source.layers["fc1"].lora_B.clone()  # (S, K, in/S, r), (S, K, r, out/S)
    method = average_inventory(model, "mhr", name="mu", tasks=["x"])
    lora = method.layers["fc1"].tasks["x"]
    mean_A = A.mean(1).reshape(16, 4)  # heads stacked along in
    mean_B = B.mean(1).permute(1, 0, 2).reshape(4, 32)  # heads side by side along out
    assert torch.allclose(lora["lora_A"].weight, mean_A.T, atol=1e-7) and torch.allclose(lora["lora_B"].weight, mean_B.T, atol=1e-7)
    assert method.layers["fc1"].scaling == 1 / 4  # Poly's 1/r
    with pytest.raises(ValueError, match="not poly, mhr or mhr_z"):
        average_inventory(model, "mu", name="again")
