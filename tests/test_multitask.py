"""Multi-task adaptation of the cascade's ASR on real synthesized speech: tasks from manifest columns,
every method trained jointly and exported as a bundle that reloads exactly, a new task that leaves the
other tasks bit-identical and reuses the trained controller, MHR-z / MHR-mu, full fine-tuning per task,
and the comparison table."""

from __future__ import annotations

import copy
from dataclasses import replace

import pandas as pd
import pytest
import torch

from components import adapters as A
from components.multitask import (
    ADAPTER, TASK, TaskAdapters, add_task, assign_tasks, evaluate_tasks, finetune_per_task, parameters_vs_tasks, pick_winner, summarize, task_names,
    train_task_adapters,
)
from components.training.loop import TrainConfig

CFG = TrainConfig(max_steps=2, batch_size=4, lr=1e-2, progress=False, device="cpu", patience=None)

# system -> (adapter config on the cascade's ASR, has shared parameters)
METHODS = {
    "hra_linear": (lambda: A.HRAConfig(target_modules=["asr:@layer"], r=8), True),
    "hra_ffn": (lambda: A.HRAConfig(target_modules=["asr:@layer"], r=8, head="ffn", ffn_dim=16), True),
    "residual_adapter": (lambda: A.BottleneckConfig(target_modules=["asr:@layer"], reduction_factor=8), False),
    "lora": (lambda: A.LoraConfig(target_modules=["asr:@attention"], r=4), False),
    "bitfit": (lambda: A.BitFitConfig(target_modules=["asr:@encoder"]), False),
    "mhr": (lambda: A.MhrConfig(target_modules=["asr:@attention"], r=4, n_skills=2, n_splits=4), True),
}


@pytest.fixture(scope="module")
def speech(two_speaker_speech):
    """Two speakers say the same 4 sentences in pink noise: two tasks of 4 utterances (conftest)."""
    return two_speaker_speech


@pytest.fixture(scope="module")
def cascade():
    from components.models.asr import ASRConfig, ConformerCTC
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    return Cascade(MaskEnhancer(), ConformerCTC(ASRConfig(d_model=32, ffn=64, layers=2, heads=4, dropout=0.0)), build_nlu(labels), labels).eval()


def tasks_of(ds) -> list[str]:
    return sorted({row[TASK] for row in ds.rows})


def asr_logits(model, ds, task: str) -> torch.Tensor:
    from components.data.dataset import collate

    batch = collate([ds[i] for i in range(len(ds)) if ds.rows[i][TASK] == task])
    A.get_adapter(model, ADAPTER).set_task(task)
    with torch.no_grad():
        return model.asr(model.se(batch["noisy"]), batch["lengths"])["logits"]


# --------------------------------------------------------------------------- tasks


def test_task_names_and_assignment():
    df = pd.DataFrame({"speaker": ["a+1", "a+1", "b.2", "b.2", "c", "c", "c"], "noise": ["pink"] * 7})
    splits = {"train": df, "nas_val": df.iloc[:2], "test": df.iloc[[0, 2, 4]]}
    assert task_names(df, ["speaker", "noise"]).tolist()[:3] == ["a_1_pink", "a_1_pink", "b_2_pink"]
    named, tasks, new = assign_tasks(splits, ["speaker"])
    assert (tasks, new) == (["a_1", "b_2"], "c")
    assert set(named["train"][TASK]) == {"a_1", "b_2", "c"}
    _, tasks, new = assign_tasks(splits, ["speaker"], max_tasks=2)  # the two with the most train rows
    assert (tasks, new) == (["a_1"], "c")
    _, tasks, new = assign_tasks(splits, ["speaker"], new_task="a_1")
    assert (tasks, new) == (["b_2", "c"], "a_1")


@pytest.mark.parametrize(
    "by, kwargs, message",
    [
        (["voice"], {}, "no column"),
        ([], {}, "at least one"),
        (["speaker"], {"new_task": "zzz"}, "new_task 'zzz'"),
        (["noise"], {}, "at least 2"),
        (["speaker"], {"min_train_rows": 5}, "at least 2"),
    ],
)
def test_bad_task_settings_are_named(by, kwargs, message):
    df = pd.DataFrame({"speaker": ["a", "a", "b", "b"], "noise": ["pink"] * 4})
    with pytest.raises(ValueError, match=message):
        assign_tasks({"train": df, "nas_val": df, "test": df}, by, **kwargs)


def test_task_names_that_would_collide_are_refused():
    df = pd.DataFrame({"speaker": ["a+1", "a.1"]})
    with pytest.raises(ValueError, match="same task name"):
        task_names(df, ["speaker"])


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize("system", list(METHODS))
def test_joint_training_exports_a_bundle_that_reloads_exactly(system, speech, cascade, tmp_path):
    config, has_shared = METHODS[system]
    tasks = tasks_of(speech)
    model = copy.deepcopy(cascade)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_task_adapters(model, config(), tasks, speech, speech, CFG)
    assert result.steps == 2
    # only adapter parameters moved; the backbone is untouched
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters() if n in before and "tasks" not in n and ".shared." not in n)
    bundle = TaskAdapters.export_adapter(model, tmp_path / system, system=system, backbone="test-backbone")
    counts = bundle.parameter_counts()
    report = A.adapter_report(model)["adapters"][ADAPTER]
    assert counts["tasks"] == report["tasks"] and counts["shared"] == report["shared"]
    assert (counts["shared"] > 0) == has_shared and all(n > 0 for n in counts["tasks"].values())

    reloaded = copy.deepcopy(cascade)
    TaskAdapters(tmp_path / system).attach(reloaded)
    model.eval(), reloaded.eval()
    for task in tasks:
        assert torch.equal(asr_logits(model, speech, task), asr_logits(reloaded, speech, task))


def test_a_bundle_keeps_the_asr_padding_it_trained_with(speech, tmp_path):
    """Trained at each batch's longest clip + 1 s, a bundle records it, and attaching it sets it again."""
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer, SEConfig
    from components.models.whisper.load import DEFAULT_MODEL, load_tokenizer, whisper_files
    from tests.test_adapters_whisper import tiny_whisper

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    asr = tiny_whisper(load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer))
    asr.config.context_seconds = 6.0  # the synthesized commands are 2-6 s
    base = Cascade(MaskEnhancer(SEConfig(hidden=16, layers=1)), asr, build_nlu(labels), labels).eval()
    model = copy.deepcopy(base)
    options = {"pad_to": "longest", "margin_seconds": 1.0}
    train_task_adapters(model, A.LoraConfig(target_modules=["asr:@attention"], r=4), tasks_of(speech), speech, speech, CFG, asr_options=options)
    bundle = TaskAdapters.export_adapter(model, tmp_path / "lora", system="lora")
    assert TaskAdapters(tmp_path / "lora").asr_options == {**base.asr.runtime_settings(), **options}

    reloaded = copy.deepcopy(base)
    bundle.attach(reloaded)
    assert (reloaded.asr.config.pad_to, reloaded.asr.config.margin_seconds) == ("longest", 1.0)
    assert base.asr.config.pad_to == "context"  # the frozen backbone keeps its own
    model.eval(), reloaded.eval()
    for task in tasks_of(speech):
        assert torch.equal(whisper_logits(model, speech, task), whisper_logits(reloaded, speech, task))
    with pytest.raises(ValueError, match=r"no run-time option \['pad_too'\]"):
        reloaded.asr.configure(pad_too="longest")
    with pytest.raises(ValueError, match="pad_to must be one of"):
        reloaded.asr.configure(pad_to="shortest")


def whisper_logits(model, ds, task: str) -> torch.Tensor:
    """Teacher-forced logits of the task's rows; the encoder runs at the ASR's padding."""
    from components.data.dataset import collate
    from components.models.cascade import asr_targets

    batch = collate([ds[i] for i in range(len(ds)) if ds.rows[i][TASK] == task])
    A.get_adapter(model, ADAPTER).set_task(task)
    targets, lengths = asr_targets(model.asr, batch)
    with torch.no_grad():
        out = model.asr(batch["noisy"], batch["lengths"], targets, lengths, words=False)
    assert out["encoder_states"].shape[1] == model.asr.frames(batch["lengths"]) // 2 < model.asr.context_frames // 2
    return out["target_logits"]


def test_a_new_task_leaves_the_others_bit_identical_and_reuses_the_controller(speech, cascade, tmp_path):
    first, new = tasks_of(speech)
    model = copy.deepcopy(cascade)
    train_task_adapters(model, A.HRAConfig(target_modules=["asr:@layer"], r=8), [first], speech.where(TASK, first), speech, CFG)
    trained = TaskAdapters.export_adapter(model, tmp_path / "joint", system="hra")
    expected = asr_logits(model.eval(), speech, first)

    grown = copy.deepcopy(cascade)
    result = add_task(grown, trained, "head", new, speech.where(TASK, new), speech, CFG)
    assert result.steps == 2
    grown.eval()
    assert torch.equal(asr_logits(grown, speech, first), expected)  # the old task is bit-identical
    assert not torch.equal(asr_logits(grown, speech, new), asr_logits(grown, speech, first))
    after = TaskAdapters.export_adapter(grown, tmp_path / "grown", system="hra+head")
    assert after.tasks == [first, new]
    from safetensors.torch import load_file

    assert load_file(after.shared_file).keys() == load_file(trained.shared_file).keys()
    assert all(torch.equal(a, b) for a, b in zip(load_file(after.shared_file).values(), load_file(trained.shared_file).values()))  # the controller: trained once
    assert after.parameter_counts()["tasks"][new] == trained.parameter_counts()["tasks"][first]  # a new task costs one head


def test_mhr_z_trains_only_routing_and_mhr_mu_starts_from_the_averaged_inventory(speech, cascade, tmp_path):
    first, new = tasks_of(speech)
    model = copy.deepcopy(cascade)
    train_task_adapters(model, METHODS["mhr"][0](), [first], speech.where(TASK, first), speech, CFG)
    trained = TaskAdapters.export_adapter(model, tmp_path / "mhr", system="mhr")

    z = copy.deepcopy(cascade)
    add_task(z, trained, "mhr_z", new, speech.where(TASK, new), speech, CFG)
    method = A.get_adapter(z, ADAPTER)
    assert method.config.method == "mhr_z" and method.task_names == [new]
    trainable = [n for n, p in z.named_parameters() if p.requires_grad]
    assert trainable and all(".logits" in n for n in trainable)
    bundle = TaskAdapters.export_adapter(z, tmp_path / "z", system="mhr+mhr_z")
    assert bundle.parameter_counts()["tasks"][new] == trained.parameter_counts()["tasks"][first]  # routing logits only

    mu = copy.deepcopy(cascade)
    add_task(mu, trained, "mhr_mu", new, speech.where(TASK, new), speech, TrainConfig(max_steps=0, progress=False, device="cpu"))
    assert A.get_adapter(mu, ADAPTER).config.method == "mhr_mu"

    with pytest.raises(ValueError, match="poly/mhr"):
        add_task(copy.deepcopy(cascade), _hra_bundle(cascade, speech, tmp_path), "mhr_z", new, speech, speech, CFG)


def _hra_bundle(cascade, speech, tmp_path) -> TaskAdapters:
    model = copy.deepcopy(cascade)
    A.add_adapter(model, A.HRAConfig(target_modules=["asr:@layer"], r=4), name=ADAPTER, tasks=tasks_of(speech)[:1])
    return TaskAdapters.export_adapter(model, tmp_path / "hra_untrained", system="hra")


def test_full_finetuning_per_task_and_per_task_scores(speech, cascade, tmp_path):
    tasks = tasks_of(speech)
    checkpoints = tmp_path / "checkpoints"
    bundle, results = finetune_per_task(cascade, tasks, speech, speech, replace(CFG, checkpoint_dir=str(checkpoints), checkpoint_every=1), tmp_path / "full")
    assert set(results) == set(tasks) and all(r.steps == 2 for r in results.values())
    assert checkpoints.is_dir() and not any(checkpoints.iterdir())  # a task's checkpoints go once it is in the bundle
    asr_parameters = sum(p.numel() for p in cascade.asr.parameters())
    assert bundle.system == "full_finetuning" and bundle.parameter_counts() == {"shared": 0, "tasks": {t: asr_parameters for t in tasks}}

    model = copy.deepcopy(cascade)
    states = []
    for task in tasks:
        bundle.use(model, task)
        states.append({k: v.clone() for k, v in model.asr.state_dict().items()})
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])  # each task has its own ASR

    rows = evaluate_tasks(cascade, bundle, speech)
    frozen = evaluate_tasks(cascade, None, speech)
    assert [r["task"] for r in rows] == tasks == [r["task"] for r in frozen]
    assert all(r["system"] == "full_finetuning" and r["n"] == 4 and 0 <= r["intent_acc"] <= 1 for r in rows)
    with pytest.raises(KeyError, match="no task"):
        bundle.use(model, "nobody")


def test_bundles_refuse_bad_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="no bundle.json"):
        TaskAdapters(tmp_path)
    (tmp_path / "bundle.json").write_text('{"format": "cascadapt-task-adapters/1", "kind": "adapter", "system": "s", "tasks": ["t"]}')
    with pytest.raises(FileNotFoundError, match="lists task 't'"):
        TaskAdapters(tmp_path)


# --------------------------------------------------------------------------- comparison


def test_summary_parameters_curve_and_winner():
    per_task = pd.DataFrame([
        {"system": s, "task": t, "wer": w, "cer": w / 2, "intent_acc": 0.5, "slu_f1": 0.3, "nlu_cer": 0.7}
        for s, ws in {"frozen": (0.9, 0.9, 0.9), "hra+head": (0.5, 0.75, 0.625), "lora": (0.625, 0.625, 0.8)}.items() for t, w in zip(("a", "b", "new"), ws)
    ])
    counts = {"hra+head": {"shared": 100, "tasks": {"a": 10, "b": 10, "new": 10}}, "lora": {"shared": 0, "tasks": {"a": 40, "b": 40, "new": 40}}}
    summary = summarize(per_task, counts, ["a", "b"], "new").set_index("system")
    assert summary.loc["hra+head", "wer"] == 0.625 and summary.loc["hra+head", "new_task_wer"] == 0.625
    assert summary.loc["lora", "per_task_params"] == 40 and summary.loc["hra+head", "total_params"] == 130 and summary.loc["frozen", "total_params"] == 0
    curve = parameters_vs_tasks(summary.reset_index()).set_index(["system", "n_tasks"])
    assert curve.loc[("hra+head", 128), "total_params"] == 100 + 128 * 10 and curve.loc[("lora", 4), "params_per_task"] == 40
    assert ("frozen", 1) not in curve.index
    assert pick_winner(summary.reset_index(), ["hra+head", "lora"]) == "hra+head"  # equal mean WER: fewer parameters a task wins
    assert pick_winner(summary.reset_index(), ["lora", "frozen"]) == "lora"
    with pytest.raises(ValueError, match="no eligible"):
        pick_winner(summary.reset_index(), ["mhr"])
