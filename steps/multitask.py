"""Steps of the multi-task pipeline: the tasks, training (every task's adapter jointly, a new task added
afterwards, full fine-tuning per task), per-task scores and the comparison of the methods."""

import tempfile
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import pandas as pd
from zenml import ArtifactConfig, get_step_context, log_metadata, step
from zenml.enums import ArtifactType
from zenml.types import HTMLString

from components import multitask
from components.adapters import config_class
from components.data.dataset import SpeechDataset
from components.models.cascade import Cascade
from components.multitask import TaskAdapters
from components.training.curves import curves_html
from steps.materializers import CascadeMaterializer, TaskAdaptersMaterializer, removed_with  # noqa: F401  (registers the materializers)
from steps.training import make_train_config, train_and_log, train_seconds

BUNDLE = ArtifactConfig(name="task_adapters", artifact_type=ArtifactType.MODEL)


def _dataset(df: pd.DataFrame, manifest_path: str) -> SpeechDataset:
    return SpeechDataset(df, Path(manifest_path).parent)


def _backbone_id() -> str:
    """The ZenML artifact version the step's ``cascade`` input came from: a bundle says what it adapts."""
    return str(get_step_context().inputs["cascade"][0].id)


def _bundle_dir(system: str) -> Path:
    """A scratch folder for a bundle the step returns (wrap the bundle in ``removed_with``); its
    materializer copies it into the artifact store."""
    return Path(tempfile.mkdtemp(prefix=f"cascadapt-{system.replace('+', '-')}-"))


def _exported(cascade: Cascade, system: str) -> TaskAdapters:
    """The cascade's multitask adapter as a bundle in a scratch folder."""
    return removed_with(TaskAdapters.export_adapter(cascade, _bundle_dir(system), system, backbone=_backbone_id()))


@step
def define_tasks(
    train: pd.DataFrame, nas_val: pd.DataFrame, test: pd.DataFrame, task_by: Tuple[str, ...] = ("speaker",), max_tasks: Optional[int] = None, new_task: Optional[str] = None
) -> Tuple[
    Annotated[pd.DataFrame, "task_train"], Annotated[pd.DataFrame, "task_nas_val"], Annotated[pd.DataFrame, "task_test"], Annotated[List[str], "tasks"], Annotated[str, "new_task"]
]:
    """Name each row's task from the manifest columns ``task_by``; the tasks trained jointly and the one added afterwards."""
    splits, tasks, new = multitask.assign_tasks({"train": train, "nas_val": nas_val, "test": test}, task_by, max_tasks, new_task)
    counts = {name: df[multitask.TASK].value_counts().to_dict() for name, df in splits.items()}
    log_metadata({"tasks": len(tasks) + 1, "new_task": new, "task_by": list(task_by), "train_rows": counts["train"], "test_rows": counts["test"]})
    return splits["train"], splits["nas_val"], splits["test"], tasks, new


@step
def train_task_adapters(
    cascade: Cascade,
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    manifest_path: str,
    system: str,
    adapter: dict,
    tasks: List[str],
    new_task: str,
    with_new_task: bool,
    train_config: dict,
    checkpoint_dir: Optional[str] = None,
    asr_options: Optional[dict] = None,
) -> Tuple[Annotated[TaskAdapters, BUNDLE], Annotated[HTMLString, "training_curves"]]:
    """Every task's adapter (``adapter``: a config dict with its ``method``) trained jointly on mixed
    batches; ``with_new_task``: the new task trains with the others (methods without shared parameters);
    ``asr_options``: the ASR's run-time options while training, kept by the bundle."""
    config = config_class(adapter.get("method", "")).from_dict(adapter)
    trained = [*tasks, new_task] if with_new_task else list(tasks)
    cfg = make_train_config(train_config, checkpoint_dir, f"multitask_{system}", adapter=adapter, tasks=trained, asr_options=asr_options or None)
    curves = train_and_log(
        system, lambda cb: multitask.train_task_adapters(cascade, config, trained, _dataset(train, manifest_path), _dataset(nas_val, manifest_path), cfg, cb, asr_options)
    )
    return _exported(cascade, system), curves


@step
def add_new_task(
    cascade: Cascade,
    adapters: TaskAdapters,
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    manifest_path: str,
    variant: str,
    new_task: str,
    train_config: dict,
    checkpoint_dir: Optional[str] = None,
) -> Tuple[Annotated[TaskAdapters, BUNDLE], Annotated[HTMLString, "training_curves"]]:
    """The new task joins a trained bundle; only what it adds trains (``variant``: head, mhr_z or mhr_mu)."""
    system = f"{adapters.system}+{variant}"
    cfg = make_train_config(train_config, checkpoint_dir, f"multitask_{system}", variant=variant, new_task=new_task, adapters=adapters.digest())
    curves = train_and_log(system, lambda cb: multitask.add_task(cascade, adapters, variant, new_task, _dataset(train, manifest_path), _dataset(nas_val, manifest_path), cfg, cb))
    return _exported(cascade, system), curves


@step
def finetune_tasks(
    cascade: Cascade,
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    manifest_path: str,
    tasks: List[str],
    new_task: str,
    train_config: dict,
    system: str = "full_finetuning",
    checkpoint_dir: Optional[str] = None,
    asr_options: Optional[dict] = None,
) -> Tuple[Annotated[TaskAdapters, BUNDLE], Annotated[HTMLString, "training_curves"]]:
    """Full fine-tuning of the ASR per task (every task, the new one included): one ASR a task."""
    trained = [*tasks, new_task]
    cfg = make_train_config(train_config, checkpoint_dir, f"multitask_{system}", tasks=trained, asr_options=asr_options or None)
    bundle, results = multitask.finetune_per_task(
        cascade, trained, _dataset(train, manifest_path), _dataset(nas_val, manifest_path), cfg, _bundle_dir(system), system, backbone=_backbone_id(), asr_options=asr_options
    )
    log_metadata({"epochs": {t: len(r.history) for t, r in results.items()}, "steps": sum(r.steps for r in results.values()),
                  "train_seconds": round(sum(train_seconds(r) for r in results.values()), 2)})
    return removed_with(bundle), HTMLString(curves_html({t: r.history for t, r in results.items()}, f"{system}: one ASR a task"))


@step
def evaluate_tasks(cascade: Cascade, test: pd.DataFrame, manifest_path: str, adapters: Optional[TaskAdapters] = None) -> Annotated[pd.DataFrame, "task_scores"]:
    """Each task's test rows through the cascade running that task (no bundle: the frozen backbone, every task)."""
    rows = multitask.evaluate_tasks(cascade, adapters, _dataset(test, manifest_path))
    scores = pd.DataFrame(rows)
    log_metadata({"system": rows[0]["system"], "mean_wer": float(scores["wer"].mean()), "mean_cer": float(scores["cer"].mean())})
    return scores


@step
def multitask_results(
    scores: List[pd.DataFrame], bundles: List[TaskAdapters], tasks: List[str], new_task: str, metric: str = "wer"
) -> Tuple[
    Annotated[pd.DataFrame, "multitask_results"],
    Annotated[pd.DataFrame, "multitask_task_scores"],
    Annotated[pd.DataFrame, "parameters_vs_tasks"],
    Annotated[HTMLString, "comparison"],
    Annotated[HTMLString, "parameters_plot"],
    Annotated[TaskAdapters, ArtifactConfig(name="winning_adapters", artifact_type=ArtifactType.MODEL)],
]:
    """One row a system, every system's per-task scores, the parameters-vs-tasks curve, their plots, and
    the winner: the bundle with every task (the new one included) and the lowest task-averaged ``metric``."""
    per_task = pd.concat(scores, ignore_index=True)
    summary = multitask.summarize(per_task, {b.system: b.parameter_counts() for b in bundles}, tasks, new_task)
    curve = multitask.parameters_vs_tasks(summary)
    every_task = {*tasks, new_task}
    eligible = [b.system for b in bundles if b.kind == "adapter" and every_task <= set(b.tasks)]
    winner = multitask.pick_winner(summary, eligible, metric)
    log_metadata({"winner": winner, **{r["system"]: {k: r[k] for k in ("wer", "cer", "new_task_wer", "per_task_params") if pd.notna(r[k])} for r in summary.to_dict("records")}})
    bundle = next(b for b in bundles if b.system == winner)
    return summary, per_task, curve, HTMLString(multitask.comparison_html(summary)), HTMLString(multitask.parameters_html(curve)), bundle
