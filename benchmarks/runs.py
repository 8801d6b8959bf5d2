"""Runs in the local ZenML store that benchmarks start from."""

from __future__ import annotations

from pathlib import Path

TARGET_PIPELINES = ("multitask_pipeline", "baseline_pipeline", "nas_pipeline")


def newest_finished_run(pipeline: str, config: str):
    """The newest completed run of ``pipeline`` (one still running, or killed, has no results); ``config``
    names what to run when there is none."""
    from zenml.client import Client

    runs = [r for r in Client().list_pipeline_runs(pipeline_name=pipeline, sort_by="desc:created", size=10).items if r.status == "completed"]
    if not runs:
        raise SystemExit(f"no finished {pipeline} run in the local ZenML store: run {config} first")
    return runs[0]


def newest_target_run():
    """The newest finished run that split the target corpus for a backbone (its fit_to_backbone step holds
    the train / nas_val / test splits, and the backbone as that step's input ``cascade``)."""
    from zenml.client import Client

    runs = [
        r
        for name in TARGET_PIPELINES
        for r in Client().list_pipeline_runs(pipeline_name=name, sort_by="desc:created", size=5).items
        if r.status == "completed" and "fit_to_backbone" in r.steps
    ]
    if not runs:
        raise SystemExit(f"no finished {' / '.join(TARGET_PIPELINES)} run in the local ZenML store: run one on the target corpus first")
    return max(runs, key=lambda r: r.created)


def target_inputs(run) -> tuple[dict, Path, object]:
    """A target run's ({train, nas_val, test} DataFrames as fit to the backbone, the corpus root, the backbone artifact)."""
    splits = {k: run.steps["fit_to_backbone"].outputs[k][0].load() for k in ("train", "nas_val", "test")}
    root = Path(run.steps["ingest"].outputs["manifest_path"][0].load()).parent
    return splits, root, run.steps["fit_to_backbone"].inputs["cascade"][0]
