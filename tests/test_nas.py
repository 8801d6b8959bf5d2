"""Choice cells and architecture weights on tiny modules: one-hot equals the chosen candidate,
straight-through gradients reach the logits, stage-2 training touches only the chosen candidate,
the penalty moves the search toward fewer parameters as lambda grows, derive is stable."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from components import adapters as A
from components.nas import Architecture, ChoiceCell, temperature
from tests.test_adapters import TinyASR


def tiny_cell(space=("frozen", "adapter", "finetune")):
    torch.manual_seed(0)
    model = TinyASR().eval()
    cell = ChoiceCell(model, space, A.PfeifferConfig(reduction_factor=4) if "adapter" in space else None)
    with torch.no_grad():  # non-trivial adapter and delta, so the candidates differ
        for p in cell.candidate_parameters()["adapter"]:
            p.add_(torch.randn_like(p) * 0.3)
        for p in cell.delta.values():
            p.add_(torch.randn_like(p) * 0.05)
    return cell


def candidate_output(cell: ChoiceCell, choice: str, x, lengths):
    cell.mode, cell.fixed = "fixed", cell.candidates.index(choice)
    return cell(x, lengths)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_one_hot_weights_give_the_chosen_candidate(mode):
    cell = tiny_cell()
    x, lengths = torch.randn(2, 10, 16), torch.tensor([10, 7])
    outs = {c: candidate_output(cell, c, x, lengths) for c in cell.candidates}
    assert not torch.allclose(outs["frozen"], outs["adapter"]) and not torch.allclose(outs["frozen"], outs["finetune"])
    for k, c in enumerate(cell.candidates):
        cell.mode, cell.weights = mode, nn.functional.one_hot(torch.tensor(k), 3).float()
        torch.testing.assert_close(cell(x, lengths), outs[c], rtol=0, atol=1e-6)


def test_finetune_starts_equal_to_frozen_and_attributes_pass_through():
    torch.manual_seed(0)
    model = TinyASR().eval()
    reference = model(torch.ones(1, 4, 16), torch.tensor([4]))
    cell = ChoiceCell(model, ("frozen", "finetune"))
    out = candidate_output(cell, "finetune", torch.ones(1, 4, 16), torch.tensor([4]))
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-6)
    assert cell.head is model.head and cell.backbone_size() == sum(p.numel() for p in model.parameters())


def test_straight_through_gradients_reach_the_logits():
    cell = tiny_cell()
    arch = Architecture({"asr": cell})
    torch.manual_seed(1)
    weights = arch.sample(tau=1.0, hard=True)
    assert weights.sum() == 1 and weights.max() == 1
    cell(torch.randn(2, 10, 16), torch.tensor([10, 7])).square().mean().backward()
    assert arch.alpha.grad is not None and arch.alpha.grad.abs().sum() > 0


class ResidualBlock(nn.Module):
    """A transformer-style block: the residual stream (B, T, 8) out, and a pooled (B, T) beside it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x):
        return x + self.linear(x), x.sum(-1)


def test_a_hard_sample_is_the_candidate_in_value_and_probes_what_it_changed():
    """The chosen candidate's weight gets <dL/dout, out - x> for an output with the input's shape (the
    residual stream's own share, the same for every candidate, left out) and <dL/dout, out> for others."""
    torch.manual_seed(0)
    cell = ChoiceCell(ResidualBlock(), ("frozen", "finetune"))
    with torch.no_grad():
        for p in cell.delta.values():
            p.add_(torch.randn_like(p) * 0.1)
    x, g, g2 = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5)
    cell.mode, cell.fixed = "fixed", 1
    expected, expected_pooled = cell(x)
    w = torch.tensor([0.0, 1.0], requires_grad=True)
    cell.mode, cell.weights = "hard", w
    out, pooled = cell(x)
    assert torch.equal(out, expected) and torch.equal(pooled, expected_pooled)  # exactly, not within rounding
    ((out * g).sum() + (pooled * g2).sum()).backward()
    probe = ((expected - x) * g).sum() + (expected_pooled * g2).sum()
    torch.testing.assert_close(w.grad, torch.stack([torch.tensor(0.0), probe.detach()]))


def test_stage_two_trains_only_the_chosen_candidate():
    cell = tiny_cell()
    arch = Architecture({"asr": cell})
    arch.fix({"asr": "adapter"})
    cell(torch.randn(2, 10, 16), torch.tensor([10, 7])).square().mean().backward()
    params = cell.candidate_parameters()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params["adapter"])
    assert all(p.grad is None for p in params["finetune"])


def test_penalty_moves_the_search_toward_fewer_parameters():
    """Deterministic: per-candidate losses favour fine-tuning; a growing lambda moves the optimum to cheaper candidates."""
    task_loss = torch.tensor([[1.0, 0.6, 0.5]])  # frozen, adapter, finetune
    chosen = {}
    for lam in (0.0, 2.0, 50.0):
        arch = Architecture({"asr": tiny_cell()}, frozen_cost=0.0)
        opt = torch.optim.Adam([arch.alpha], lr=0.1)
        for _ in range(200):
            opt.zero_grad()
            ((arch.probabilities() * task_loss).sum() + arch.penalty(lam)).backward()
            opt.step()
        chosen[lam] = arch.derive()["asr"]
        expected = arch.expected_parameters().item()
        chosen[f"params@{lam}"] = expected
    assert chosen[0.0] == "finetune" and chosen[50.0] == "frozen"
    assert chosen["params@0.0"] > chosen["params@2.0"] > chosen["params@50.0"]


def test_frozen_virtual_cost_counts_in_the_penalty():
    free = Architecture({"asr": tiny_cell()}, frozen_cost=0.0)
    costly = Architecture({"asr": tiny_cell()}, frozen_cost=0.5)
    assert free.costs[0, 0] == 0 and costly.costs[0, 0] == 0.5 * costly.full_params
    assert costly.penalty(1.0) > free.penalty(1.0)


def test_derive_is_stable_and_exports_json():
    arch = Architecture({"se": tiny_cell(), "asr": tiny_cell()})
    with torch.no_grad():
        arch.alpha.copy_(torch.tensor([[0.1, 2.0, 0.3], [0.0, 0.1, 0.2]]))
    first = arch.derive()
    for _ in range(3):
        arch.sample(tau=0.5)  # sampling never changes the derived architecture
    assert arch.derive() == first == {"se": "adapter", "asr": "finetune"}
    exported = json.loads(arch.to_json(history=[arch.probabilities().tolist()]))
    assert exported["architecture"] == first and len(exported["history"]) == 1
    assert 0 < exported["trainable_fraction"] < 1.1


def test_temperature_anneals_from_max_to_min():
    assert temperature(0, 100) == pytest.approx(5.0) and temperature(100, 100) == pytest.approx(0.5)
    assert temperature(50, 100) == pytest.approx((5.0 * 0.5) ** 0.5) and temperature(500, 100) == pytest.approx(0.5)


def test_bad_cells_are_refused():
    with pytest.raises(ValueError, match="candidates must be distinct"):
        ChoiceCell(nn.Linear(2, 2), ("frozen", "pruned"))
    with pytest.raises(ValueError, match="adapter config exactly when"):
        ChoiceCell(nn.Linear(2, 2), ("frozen", "adapter"))
    with pytest.raises(ValueError, match="same candidates"):
        Architecture({"a": ChoiceCell(TinyASR(), ("frozen", "finetune")), "b": ChoiceCell(TinyASR(), ("frozen",))})


class Regression(torch.utils.data.Dataset):
    """y = x @ W_true: the random backbone is far off, fine-tuning fits it, an adapter partly."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.randn(4, 4, generator=torch.Generator().manual_seed(99))

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def mlp_problem(space=("frozen", "adapter", "finetune")):
    torch.manual_seed(0)
    model = nn.Module()
    model.body = ChoiceCell(MLP(), space, A.BottleneckConfig(target_modules=["fc1"], reduction_factor=4))
    return model, Architecture({"body": model.body})


def mse(model, batch):
    return (model.body(batch["x"]) - batch["y"]).square().mean()


@pytest.mark.parametrize("lam, expected", [(0.0, "finetune"), (200.0, "frozen")])
def test_search_follows_the_loss_and_the_penalty(lam, expected):
    from components.nas import SearchConfig, search

    model, arch = mlp_problem()
    cfg = SearchConfig(epochs=12, warmup_epochs=2, batch_size=16, lam=lam, arch_lr=0.05, weight_lr=0.01, record_every=5, progress=False, device="cpu")
    result = search(model, arch, mse, Regression(128, 0), Regression(64, 1), cfg)
    assert result.architecture == {"body": expected}
    assert result.steps == 12 * 8 and len(result.history) == result.steps // 5 + (result.steps % 5 > 0)
    assert "val_loss" not in result.history[0] and "penalty" in result.history[-1]  # warm-up: weights only


def test_the_architecture_steps_score_their_own_loss():
    """val_loss_fn (the loss of the mode that serves) drives alpha; loss_fn only the weights. The train loss
    rewards fitting y (lambda 0 picks finetune above); a validation loss that rewards staying at the
    pre-trained output picks frozen."""
    from components.nas import SearchConfig, search

    model, arch = mlp_problem()
    torch.manual_seed(0)
    pretrained = MLP()  # mlp_problem's backbone, as it starts

    def stay(model, batch):
        return (model.body(batch["x"]) - pretrained(batch["x"]).detach()).square().mean()

    cfg = SearchConfig(epochs=12, warmup_epochs=2, batch_size=16, lam=0.0, arch_lr=0.05, weight_lr=0.01, progress=False, device="cpu")
    assert search(model, arch, mse, Regression(128, 0), Regression(64, 1), cfg, val_loss_fn=stay).architecture == {"body": "frozen"}


@pytest.mark.parametrize("warmup", [{"warmup_epochs": 1}, {"warmup_steps": 8}])
def test_a_search_whose_warm_up_covers_every_step_is_refused(warmup):
    """max_steps 8 of 8-batch epochs: alpha would stay uniform and every cell derive its first candidate."""
    from components.nas import SearchConfig, search

    model, arch = mlp_problem()
    cfg = SearchConfig(epochs=2, max_steps=8, batch_size=16, progress=False, device="cpu", **warmup)
    with pytest.raises(ValueError, match="no architecture step: its warm-up of 8 steps .* covers all 8 steps"):
        search(model, arch, mse, Regression(128, 0), Regression(64, 1), cfg)
    result = search(model, arch, mse, Regression(128, 0), Regression(64, 1), SearchConfig(epochs=2, max_steps=8, warmup_steps=5, batch_size=16, record_every=1, progress=False, device="cpu"))
    assert ["val_loss" in r for r in result.history] == [False] * 5 + [True] * 3  # warmup_steps: 5 weight-only steps, then 3 arch steps


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))])
def test_a_killed_search_resumes_where_it_stopped(tmp_path, device):
    """Killed at step 15 (the last checkpoint at 10): the resumed search ends with
    the same alpha, weights and history as one that ran through."""
    from components.nas import SearchConfig, search

    cfg = dict(epochs=4, warmup_epochs=1, batch_size=16, lam=1.0, arch_lr=0.05, weight_lr=0.01, record_every=3, progress=False, device=device)
    model, arch = mlp_problem()
    reference = search(model, arch, mse, Regression(128, 0), Regression(40, 1), SearchConfig(**cfg))
    expected = [arch.alpha.detach().clone(), *(p.detach().clone() for p in model.parameters())]

    class Killed(Exception):
        pass

    def kill(record):
        if record["step"] == 15:
            raise Killed

    model, arch = mlp_problem()
    folder = str(tmp_path / "search")
    with pytest.raises(Killed):
        search(model, arch, mse, Regression(128, 0), Regression(40, 1), SearchConfig(**cfg, checkpoint_dir=folder, checkpoint_every=5), on_record=kill)
    model, arch = mlp_problem()  # a fresh process: nothing but the folder survives
    resumed = search(model, arch, mse, Regression(128, 0), Regression(40, 1), SearchConfig(**cfg, checkpoint_dir=folder, checkpoint_every=5))
    assert resumed.resumed_from == 10 and resumed.steps == reference.steps == 32
    assert resumed.history == reference.history and resumed.architecture == reference.architecture
    assert arch.alpha.device.type == device and all(p.device.type == device for p in model.parameters())
    for a, b in zip(expected, [arch.alpha, *model.parameters()]):
        torch.testing.assert_close(b.detach(), a, rtol=0, atol=0)
    with pytest.raises(ValueError, match="search checkpoint"):  # another lambda does not resume this search
        search(*mlp_problem(), mse, Regression(128, 0), Regression(40, 1), SearchConfig(**cfg | {"lam": 2.0}, checkpoint_dir=folder))


def test_two_stage_trains_only_the_derived_candidates(tmp_path):
    from components.nas import train_derived
    from components.training.loop import TrainConfig

    model, arch = mlp_problem()
    delta_before = [p.clone() for p in model.body.delta.values()]
    adapter_before = [p.clone() for p in model.body.candidate_parameters()["adapter"]]
    train_derived(model, arch, {"body": "adapter"}, mse, Regression(64, 0), TrainConfig(max_epochs=2, batch_size=16, lr=0.01, progress=False, device="cpu"))
    assert all(torch.equal(a, b) for a, b in zip(delta_before, model.body.delta.values()))
    assert any(not torch.equal(a, b) for a, b in zip(adapter_before, model.body.candidate_parameters()["adapter"]))
    assert model.body.mode == "fixed" and model.body.candidates[model.body.fixed] == "adapter"


@pytest.fixture(scope="module")
def speech(slurp_jsonl, tmp_path_factory):
    from components.data.corpus import CorpusConfig, build_corpus
    from components.data.dataset import SpeechDataset
    from components.data.manifest import read_manifest
    from components.data.slurp import read_slurp
    from components.data.speakers import Speaker

    out = tmp_path_factory.mktemp("nas")
    records = [r for r in read_slurp(slurp_jsonl) if r.entities][:4]
    manifest = build_corpus(records, out, CorpusConfig([Speaker("espeak-ng", "en-us")], snrs=[10.0], noise_kinds=["pink"], workers=2), progress=False)
    return SpeechDataset(read_manifest(manifest), out)


def test_search_on_the_cascade_runs_every_module(speech, tmp_path):
    """The real cascade: cells on SE, ASR and NLU, a short search and stage 2; frozen cells equal the plain cascade."""
    from components.data.dataset import collate
    from components.models.asr import ASRConfig, ConformerCTC
    from components.models.cascade import Cascade, cascade_loss
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer
    from components.nas import SearchConfig, attach_cells, glue_parameters, search, train_derived
    from components.training.loop import TrainConfig

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    cascade = Cascade(MaskEnhancer(), ConformerCTC(ASRConfig(d_model=96, ffn=256, layers=2, heads=4, dropout=0.0)), build_nlu(labels), labels).eval()
    batch = collate([speech[i] for i in range(len(speech))])
    with torch.no_grad():
        plain = cascade(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"]
    cells = attach_cells(cascade, "NFA")
    arch = Architecture(cells)
    arch.fix({name: "frozen" for name in cells})
    with torch.no_grad():
        torch.testing.assert_close(cascade(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"], plain, rtol=0, atol=1e-5)

    alpha = arch.alpha.detach().clone()
    cfg = SearchConfig(epochs=1, warmup_epochs=0, batch_size=2, bucket_by_length=True, progress=False, device="cpu", record_every=1)
    result = search(cascade, arch, cascade_loss, speech, speech, cfg, collate_fn=collate, extra=glue_parameters(cascade))
    assert set(result.architecture) == {"se", "asr", "nlu"} and result.steps == 2 and len(result.history) == 2
    assert not torch.equal(alpha, arch.alpha.detach())
    train_derived(cascade, arch, {"se": "frozen", "asr": "adapter", "nlu": "finetune"}, cascade_loss, speech,
                  TrainConfig(max_steps=1, batch_size=2, progress=False, device="cpu"), collate_fn=collate, extra=glue_parameters(cascade))
    assert cascade.asr.mode == "fixed" and not any(p.requires_grad for p in cascade.se.parameters())

    # a searched cascade saves and loads like any cascade (safetensors + JSON), cells and choices included
    from components.cascade_files import load_cascade, save_cascade

    cascade.eval()
    with torch.no_grad():
        expected = cascade(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"]
    loaded = load_cascade(save_cascade(cascade, tmp_path / "searched"))
    assert isinstance(loaded.asr, ChoiceCell) and loaded.asr.candidates[loaded.asr.fixed] == "adapter"
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"], expected, rtol=0, atol=1e-5)


def test_block_cells_choose_per_layer_and_round_trip(speech, tmp_path):
    """One cell per Conformer / MiniLM layer: all frozen equals the plain cascade, each block's adapter
    lies inside its block, a mixed architecture trains exactly its choices and saves and loads."""
    from components.data.dataset import collate
    from components.models.asr import ASRConfig, ConformerCTC
    from components.cascade_files import load_cascade, save_cascade
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.nas import attach_cells
    from components.nas.cascade import find_cells, trainable_parameters

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    cascade = Cascade(None, ConformerCTC(ASRConfig(d_model=96, ffn=256, layers=2, heads=4, dropout=0.0)), build_nlu(labels), labels).eval()
    batch = collate([speech[i] for i in range(2)])
    logits = lambda model: model(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"]  # noqa: E731
    with torch.no_grad():
        plain = logits(cascade)
    cells = attach_cells(cascade, "NFA", blocks=["asr", "nlu"])
    assert list(cells) == ["asr.0", "asr.1", *(f"nlu.{i}" for i in range(6))]
    arch = Architecture(cells)
    arch.fix({name: "frozen" for name in cells})
    with torch.no_grad():
        torch.testing.assert_close(logits(cascade), plain, rtol=0, atol=1e-5)
    for cell in cells.values():  # the adapter's layers and the fine-tune deltas stay inside the block
        block_params = {id(p) for p in cell.base.parameters()}
        assert cell.candidate_parameters()["adapter"] and all(id(p) in block_params for p in cell.candidate_parameters()["adapter"])
        assert cell.backbone_size() < sum(p.numel() for p in cascade.nlu.parameters())

    choices = {name: "frozen" for name in cells} | {"asr.1": "adapter", "nlu.5": "finetune"}
    arch.fix(choices)
    with torch.no_grad():
        for cell in (cells["asr.1"], cells["nlu.5"]):
            for p in cell.candidate_parameters()[choices[cell.label]]:
                p.add_(torch.randn_like(p) * 0.02)
        expected = logits(cascade)
    assert not torch.allclose(expected, plain)
    chosen = sum(p.numel() for c in ("asr.1", "nlu.5") for p in cells[c].candidate_parameters()[choices[c]])
    assert trainable_parameters(cascade) == chosen + sum(p.numel() for p in cascade.bridge.parameters())
    loaded = load_cascade(save_cascade(cascade, tmp_path / "blocks"))
    assert {n: c.candidates[c.fixed] for n, c in find_cells(loaded).items()} == choices
    with torch.no_grad():
        torch.testing.assert_close(logits(loaded), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="are not cascade modules"):
        attach_cells(Cascade(None, ConformerCTC(ASRConfig(d_model=96, ffn=256, layers=2, heads=4)), build_nlu(labels), labels), "NFA", modules=["asr", "brige"])
    with pytest.raises(ValueError, match="not among the searched modules"):
        attach_cells(Cascade(None, ConformerCTC(ASRConfig(d_model=96, ffn=256, layers=2, heads=4)), build_nlu(labels), labels), "NFA", modules=["asr"], blocks=["nlu"])


def test_plots_and_pareto_front():
    from components.nas.plots import architecture_weights_html, pareto_front, pareto_html

    history = [{"step": s, "probabilities": [[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]} for s in (1, 2, 3)]
    assert architecture_weights_html(history, ["se", "asr"], ["frozen", "adapter", "finetune"]).count("data:image/png;base64,") == 1
    many = [{"step": 1, "probabilities": [[0.5, 0.3, 0.2]] * 7}]  # per-block cells wrap onto rows of four panels
    assert "<img" in architecture_weights_html(many, ["se", "asr", *(f"nlu.{i}" for i in range(5))], ["frozen", "adapter", "finetune"])
    points = [{"label": "a", "trainable_pct": 1.0, "nlu_cer": 0.3, "wer": 0.5}, {"label": "b", "trainable_pct": 5.0, "nlu_cer": 0.2, "wer": 0.4},
              {"label": "c", "trainable_pct": 6.0, "nlu_cer": 0.25, "wer": 0.3}, {"label": "full", "trainable_pct": 100.0, "nlu_cer": 0.19, "wer": 0.35}]
    assert [p["label"] for p in pareto_front(points, "nlu_cer")] == ["a", "b", "full"]
    assert [p["label"] for p in pareto_front(points, "wer")] == ["a", "b", "c"]  # WER has its own front
    assert pareto_html(points).count("data:image/png;base64,") == 1  # NLU CER and WER panels in one figure


def test_soft_mixture_of_an_asr_backbone_keeps_the_first_candidates_words():
    """An ASR cell's candidates may hypothesise different words: the tensors mix, the words are candidate 0's."""
    from components.models.asr import ASRConfig, ConformerCTC

    torch.manual_seed(0)
    cell = ChoiceCell(ConformerCTC(ASRConfig(d_model=32, ffn=64, layers=1, heads=2, dropout=0.0)).eval(), ("frozen", "finetune"))
    with torch.no_grad():
        for delta in cell.delta.values():
            delta.normal_(0, 0.5)
    wave, lengths = torch.randn(2, 8000) * 0.1, torch.tensor([8000, 6000])
    frozen, finetune = (candidate_output(cell, c, wave, lengths) for c in ("frozen", "finetune"))
    assert frozen["words"] != finetune["words"]  # the case that used to break the mixture
    cell.mode, cell.weights = "soft", torch.tensor([0.25, 0.75])
    mixed = cell(wave, lengths)
    torch.testing.assert_close(mixed["logits"], 0.25 * frozen["logits"] + 0.75 * finetune["logits"])
    assert mixed["words"] == frozen["words"] and mixed["texts"] == frozen["texts"]
