"""Every shipped pipeline config runs on the backbone it is written for.

A config's parameters are its pipeline's and pass its typed blocks (steps/settings.py: the target corpus,
training settings, multi-task methods), which name a misspelled key, as ZenML does before any step runs;
its training settings build their dataclasses and their
``lr_scale`` prefixes name parameters of the cascade they train; every adapter it names attaches to that
backbone and gets a gradient from the ASR loss (one step on a tiny random cascade of the kind); its NAS
cells attach. Configs named ``*_conformer`` are for the Conformer-CTC, the others for Whisper (the
default). This is what catches a config tuned on one backbone and shipped for another: HRA over both of
Whisper's stacks (their sequences differ in length), BitFit on '@encoder' (Whisper has no such role).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import TypeAdapter, ValidationError

from components import adapters as A
from components.arte.loop import ArteConfig
from components.models.asr import ASRConfig, ConformerCTC
from components.models.cascade import Cascade
from components.models.nlu import NluLabels, build_nlu
from components.models.se import MaskEnhancer, SEConfig
from components.nas.cascade import SEARCHED_MODULES, attach_cells
from components.nas.search import SearchConfig
from components.training.loop import TrainConfig, lr_groups

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
PIPELINES = {  # config name (or its prefix before '_') -> the pipeline it configures
    "source": "data_pipeline.data_pipeline", "target": "data_pipeline.data_pipeline", "demo": "data_pipeline.data_pipeline",
    "pretrain": "pretrain_pipeline.pretrain_pipeline", "baselines": "baseline_pipeline.baseline_pipeline",
    "nas": "nas_pipeline.nas_pipeline", "arte": "arte_pipeline.arte_pipeline", "multitask": "multitask_pipeline.multitask_pipeline",
    "retrain": "multitask_pipeline.multitask_pipeline", "retrain_kubeflow": "multitask_pipeline.multitask_pipeline",
    "retrain_on_drift": "retraining_pipeline.retraining_pipeline", "deploy": "deployment_pipeline.deployment_pipeline",
    "drift": "drift_pipeline.drift_pipeline",
}
TRAIN_SETTINGS = ("finetune_train", "stage2_train", "train_config", "new_task_train", "update_config", "nlu_on_1best_train",
                  "se_train", "asr_train", "asr_enhanced_train", "nlu_train", "bridge_train")
TEXTS = ["set an alarm for five am", "hello"]


def parameters(path: Path) -> dict:
    return yaml.safe_load(path.read_text()).get("parameters", {})


def backbone_kind(path: Path) -> str:
    return "conformer_ctc" if path.stem.endswith("_conformer") else "whisper"


def pipeline_of(path: Path):
    name = path.stem if path.stem in PIPELINES else path.stem.split("_")[0]
    module, attr = PIPELINES[name].split(".")
    return getattr(importlib.import_module(f"pipelines.{module}"), attr)


@pytest.fixture(scope="module")
def cascades() -> dict[str, Cascade]:
    """A tiny random cascade of each backbone kind (real MiniLM): SE -> ASR -> NLU."""
    from components.models.whisper.load import DEFAULT_MODEL, load_tokenizer, whisper_files
    from tests.test_adapters_whisper import tiny_whisper

    labels = NluLabels.from_label_set()
    nlu = build_nlu(labels)
    asrs = {"whisper": tiny_whisper(load_tokenizer(whisper_files(DEFAULT_MODEL).tokenizer)),
            "conformer_ctc": ConformerCTC(ASRConfig(d_model=32, ffn=64, layers=2, heads=4, dropout=0.0))}
    return {kind: Cascade(MaskEnhancer(SEConfig(hidden=16, layers=1)), asr, copy.deepcopy(nlu), labels) for kind, asr in asrs.items()}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_parameters_are_the_pipelines_and_settings_build(path, cascades):
    params = parameters(path)
    entrypoint = pipeline_of(path).entrypoint
    accepted = inspect.signature(entrypoint).parameters
    unknown = sorted(set(params) - set(accepted))
    assert not unknown, f"{path.name}: {unknown} are not parameters of {pipeline_of(path).name}"
    missing = sorted(n for n, p in accepted.items() if p.default is inspect.Parameter.empty and n not in params)
    assert not missing, f"{path.name}: {missing} required by {pipeline_of(path).name}"
    hints = typing.get_type_hints(entrypoint)
    for name, value in params.items():  # what ZenML's validation does before any step: typed blocks refuse unknown keys
        TypeAdapter(hints[name]).validate_python(value)

    plain = cascades[backbone_kind(path)]
    named = list(plain.named_parameters())
    for key in TRAIN_SETTINGS:
        if key in params:
            cfg = TrainConfig(**params[key])
            if key == "finetune_train":  # trains the plain cascade; the others train cells or one module
                lr_groups(named, cfg.lr, cfg.lr_scale)
    for spec in params.get("methods", {}).values():
        if "train" in spec:
            TrainConfig(**spec["train"])
    if "search_config" in params:
        SearchConfig(**params["search_config"])
    if "arte_config" in params:
        ArteConfig.from_dict(params["arte_config"])
    if "se" in params:
        SEConfig(**params["se"])
    if "asr" in params:
        assert params["asr"].get("kind", "conformer_ctc") == backbone_kind(path), f"{path.name}: its asr kind against its name"


ADAPTER_CASES = [(p, system) for p in CONFIGS for system, spec in parameters(p).get("methods", {}).items() if not spec.get("full")]


@pytest.mark.parametrize(("path", "system"), ADAPTER_CASES, ids=[f"{p.stem}-{s}" for p, s in ADAPTER_CASES])
def test_every_multitask_adapter_attaches_and_trains_on_its_backbone(path, system, cascades):
    spec = parameters(path)["methods"][system]["adapter"]
    cascade = copy.deepcopy(cascades[backbone_kind(path)])
    A.add_adapter(cascade, A.config_class(spec["method"]).from_dict(spec), name="x", tasks=["a", "b"])
    A.freeze_backbone(cascade)
    A.get_adapter(cascade, "x").set_task(["a", "b"])
    torch.manual_seed(0)
    wave, lengths = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    targets, target_lengths = cascade.asr.encode_targets(TEXTS)
    out = cascade.asr(wave, lengths, targets, target_lengths, words=False)
    cascade.asr.loss(out, targets, target_lengths).backward()
    trained = [n for n, p in cascade.named_parameters() if p.requires_grad]
    assert trained, f"{path.name} {system}: nothing trains"
    assert any(p.grad is not None for p in cascade.parameters() if p.requires_grad), f"{path.name} {system}: no gradient"


SEARCH_CASES = [p for p in CONFIGS if {"stage2_train", "search_config"} & set(parameters(p)) or p.stem.startswith("arte")]


@pytest.mark.parametrize("path", SEARCH_CASES, ids=lambda p: p.stem)
@pytest.mark.parametrize("space", ["NA", "NFA"])
def test_search_cells_attach_and_their_lr_scales_name_parameters(path, space, cascades):
    params = parameters(path)
    cascade = copy.deepcopy(cascades[backbone_kind(path)])
    attach_cells(cascade, space, params.get("adapters"), params.get("modules", SEARCHED_MODULES), params.get("blocks", ()))
    named = list(cascade.named_parameters())
    for key in ("stage2_train", "train_config", "update_config"):
        if key in params:
            cfg = TrainConfig(**params[key])
            lr_groups(named, cfg.lr, cfg.lr_scale)
    if "search_config" in params:
        cfg = SearchConfig(**params["search_config"])
        lr_groups(named, cfg.weight_lr, cfg.lr_scale)


@pytest.mark.parametrize(("block", "bad", "message"), [
    ("target", {"slurp_jsonl": "x.jsonl", "limt": 3}, "limt"),
    ("train_config", {"max_epoch": 1}, "max_epoch"),
    ("methods", {"hra": {"adapter": {"method": "hra", "rr": 8}}}, "HRAConfig has no field(s) ['rr']"),
    ("methods", {"hra": {"adaptor": {"method": "hra"}}}, "hra.adaptor"),
    ("asr_options", {"pad_too": "longest"}, "no ASR backbone has the run-time option(s) ['pad_too']"),
])
def test_a_misspelled_key_is_named(block, bad, message):
    """The typed blocks name a bad key (the same validation ZenML runs on a config before any step)."""
    params = parameters(Path(__file__).resolve().parents[1] / "configs/multitask.yaml")
    hints = typing.get_type_hints(pipeline_of(Path("multitask.yaml")).entrypoint)
    TypeAdapter(hints[block]).validate_python(params[block])
    with pytest.raises(ValidationError) as error:
        TypeAdapter(hints[block]).validate_python(bad)
    assert message in str(error.value)


def test_zenml_refuses_a_misspelled_key_before_any_step(tmp_path):
    """`zenml pipeline run` on a config with a typo in a typed block: no run, and the error names the key."""
    config = yaml.safe_load((CONFIGS[0].parent / "multitask_demo.yaml").read_text())
    config["parameters"]["train_config"]["max_epoch"] = 2
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
    zenml = str(Path(sys.executable).parent / "zenml")
    proc = subprocess.run([zenml, "pipeline", "run", "pipelines.multitask_pipeline.multitask_pipeline", "-c", str(path)],
                          cwd=CONFIGS[0].parents[1], env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "max_epoch" in out and "Extra inputs are not permitted" in out, out[-3000:]
    runs = subprocess.run([zenml, "pipeline", "runs", "list"], cwd=CONFIGS[0].parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert "multitask_pipeline" not in runs.stdout, runs.stdout[-2000:]
