"""The NFA search space over the Whisper cascade (tiny random Whisper, the real tiny.en tokenizer, no download):
one cell per Whisper encoder layer, decoder layer, the SE, the bridge and each MiniLM layer; an architecture
step moves only alpha, a weight step only the sampled candidates; a derived architecture saves, loads and
predicts the same; a killed search resumes exactly."""

from __future__ import annotations

import pytest
import torch

from components.nas import Architecture, SearchConfig, attach_cells, search
from tests.test_nas import speech  # noqa: F401  (the fixture: 4 SLURP rows spoken by espeak-ng, pink noise)

# Houlsby after each Whisper block's attention and FFN, sequential: fc2's input is wider than its output
WHISPER_ADAPTERS = {"asr": {"method": "houlsby", "target_modules": ["@attention", "@ffn"], "reduction_factor": 4, "placement": "sequential"}}
MODULES = ("se", "asr", "bridge", "nlu")
LORA = {"method": "lora", "target_modules": ["@attention"], "r": 4}  # configs/nas_lora.yaml's kind
HRA = {"method": "hra", "r": 8}  # the controller narrowed to one block
ADAPTER_KINDS = {"houlsby": WHISPER_ADAPTERS, "lora": {"asr": LORA, "nlu": LORA}, "hra": {"asr": HRA, "nlu": HRA}}


@pytest.fixture(scope="module")
def tokenizer():
    from components.models.whisper.load import DEFAULT_MODEL, load_tokenizer, whisper_files

    return load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer)


def whisper_cascade(tokenizer):
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer, SEConfig
    from tests.test_adapters_whisper import tiny_whisper

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    return Cascade(MaskEnhancer(SEConfig(hidden=16, layers=1)), tiny_whisper(tokenizer, context_seconds=8.0), build_nlu(labels), labels).eval()


def searched(tokenizer):
    cascade = whisper_cascade(tokenizer)
    cells = attach_cells(cascade, "NFA", WHISPER_ADAPTERS, modules=MODULES, blocks=["asr", "nlu"])
    return cascade, cells, Architecture(cells)


@pytest.mark.parametrize("kind", ADAPTER_KINDS)
def test_one_cell_per_whisper_block_se_bridge_and_minilm_layer(tokenizer, speech, kind):
    from components.data.dataset import collate
    from components.nas.cascade import glue_parameters

    cascade = whisper_cascade(tokenizer)
    batch = collate([speech[i] for i in range(2)])
    with torch.no_grad():
        plain = cascade(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"]
    cells = attach_cells(cascade, "NFA", ADAPTER_KINDS[kind], modules=MODULES, blocks=["asr", "nlu"])
    whisper = cascade.asr.whisper.model
    assert list(cells) == ["se", "asr.0", "asr.1", "asr.2", "asr.3", "bridge", *(f"nlu.{i}" for i in range(6))]
    assert [cells[f"asr.{i}"] for i in range(4)] == [*whisper.encoder.layers, *whisper.decoder.layers]
    assert cascade.bridge is cells["bridge"] and glue_parameters(cascade) == []  # searched: no longer always trained
    for cell in cells.values():  # every candidate has something to train, inside its own block
        costs = cell.candidate_costs()
        assert costs["frozen"] == 0 < costs["adapter"] < costs["finetune"] == cell.backbone_size()
    Architecture(cells).fix({name: "frozen" for name in cells})
    with torch.no_grad():
        torch.testing.assert_close(cascade(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"], plain, rtol=0, atol=1e-5)


def test_an_architecture_step_moves_alpha_and_a_weight_step_only_the_sampled_candidates(tokenizer, speech):
    from components.data.dataset import collate
    from components.models.cascade import cascade_loss

    cascade, cells, arch = searched(tokenizer)
    names = {id(p): n for n, p in cascade.named_parameters()}
    before = {n: p.detach().clone() for n, p in cascade.named_parameters()}
    alpha = arch.alpha.detach().clone()
    torch.manual_seed(3)
    sampled = {}

    class Stop(Exception):
        pass

    def stop_after_one(record):  # the architecture the one weight step ran: each cell's one-hot
        sampled.update({cell.label: cell.candidates[int(cell.weights.argmax())] for cell in cells.values()})
        raise Stop

    # one weight step (warm-up: alpha untouched), stopped before the architecture step
    cfg = dict(epochs=2, batch_size=4, progress=False, device="cpu", record_every=1, arch_lr=0.1)
    with pytest.raises(Stop):
        search(cascade, arch, cascade_loss, speech, speech, SearchConfig(**cfg, warmup_steps=1), collate_fn=collate, on_record=stop_after_one)
    assert torch.equal(arch.alpha.detach(), alpha)
    moved = {n for n, p in cascade.named_parameters() if not torch.equal(p.detach(), before[n])}
    allowed = {names[id(p)] for label, choice in sampled.items() for p in cells[label].candidate_parameters()[choice]}
    assert moved and moved <= allowed, sorted(moved - allowed)[:5]
    assert all(names[id(p)] not in moved for p in cells["nlu.0"].candidate_parameters()["finetune"] if sampled["nlu.0"] != "finetune")
    # one weight step and one architecture step: alpha moves
    search(cascade, arch, cascade_loss, speech, speech, SearchConfig(**cfg, warmup_epochs=0, max_steps=1), collate_fn=collate)
    assert not torch.equal(arch.alpha.detach(), alpha)


def test_a_derived_whisper_architecture_saves_loads_and_predicts_the_same(tokenizer, speech, tmp_path):
    from components.cascade_files import load_cascade, save_cascade
    from components.data.dataset import collate
    from components.nas.cascade import find_cells, trainable_parameters

    cascade, cells, arch = searched(tokenizer)
    choices = {name: "frozen" for name in cells} | {"asr.1": "adapter", "asr.3": "finetune", "bridge": "adapter", "nlu.5": "finetune"}
    arch.fix(choices)
    batch = collate([speech[i] for i in range(2)])
    with torch.no_grad():
        for label in ("asr.1", "asr.3", "bridge", "nlu.5"):  # off their zero init, so the choices show in the outputs
            for p in cells[label].candidate_parameters()[choices[label]]:
                p.add_(torch.randn_like(p) * 0.02)
        expected = cascade(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"]
    assert trainable_parameters(cascade) == sum(p.numel() for label in ("asr.1", "asr.3", "bridge", "nlu.5") for p in cells[label].candidate_parameters()[choices[label]])
    loaded = load_cascade(save_cascade(cascade, tmp_path / "whisper_nfa"))
    assert {n: c.candidates[c.fixed] for n, c in find_cells(loaded).items()} == choices
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["noisy"], batch["lengths"])["nlu"]["scenario_logits"], expected, rtol=0, atol=1e-5)


def test_a_killed_whisper_search_resumes_where_it_stopped(tokenizer, speech, tmp_path):
    from components.data.dataset import collate
    from components.models.cascade import cascade_loss

    cfg = dict(epochs=2, warmup_epochs=0, batch_size=2, progress=False, device="cpu", record_every=1)
    cascade, _, arch = searched(tokenizer)
    reference = search(cascade, arch, cascade_loss, speech, speech, SearchConfig(**cfg), collate_fn=collate)
    expected = [arch.alpha.detach().clone(), *(p.detach().clone() for p in cascade.parameters())]

    class Killed(Exception):
        pass

    def kill(record):
        if record["step"] == 3:
            raise Killed

    folder = str(tmp_path / "search")
    cascade, _, arch = searched(tokenizer)
    with pytest.raises(Killed):
        search(cascade, arch, cascade_loss, speech, speech, SearchConfig(**cfg, checkpoint_dir=folder, checkpoint_every=2), collate_fn=collate, on_record=kill)
    cascade, _, arch = searched(tokenizer)
    resumed = search(cascade, arch, cascade_loss, speech, speech, SearchConfig(**cfg, checkpoint_dir=folder, checkpoint_every=2), collate_fn=collate)
    assert resumed.resumed_from == 2 and resumed.steps == reference.steps == 4
    assert resumed.history == reference.history and resumed.architecture == reference.architecture
    for a, b in zip(expected, [arch.alpha, *cascade.parameters()]):
        torch.testing.assert_close(b.detach(), a, rtol=0, atol=0)
