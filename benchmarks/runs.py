"""Runs in the local ZenML store that benchmarks start from."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TARGET_PIPELINES = ("multitask_pipeline", "baseline_pipeline", "nas_pipeline")


def config_parameters(config: str) -> dict:
    """The ``parameters`` of a pipeline config (YAML), as ZenML records them on a run."""
    import yaml

    return yaml.safe_load((REPO / config).read_text()).get("parameters", {})


def finished_runs(pipeline: str, config: str) -> list:
    """The completed runs of ``pipeline`` made with ``config``'s parameters, newest first (a run still
    running, or killed, has no results; one of another config, or of this file before an edit, is not its)."""
    from zenml.client import Client

    wanted = json.loads(json.dumps(config_parameters(config)))  # YAML -> JSON types, as the run's

    def made_with(run) -> bool:  # the run records defaults too: compare what the file names
        recorded = json.loads(json.dumps(run.config.parameters if run.config else {}, default=str))
        return all(recorded.get(k) == v for k, v in wanted.items())

    runs = Client().list_pipeline_runs(pipeline_name=pipeline, sort_by="desc:created", size=50).items
    return [r for r in runs if r.status == "completed" and made_with(r)]


def newest_finished_run(pipeline: str, config: str):
    """The newest completed run of ``pipeline`` with ``config``'s parameters; ``config`` names what to run when there is none."""
    runs = finished_runs(pipeline, config)
    if not runs:
        raise SystemExit(f"no finished {pipeline} run with the parameters of {config} in the local ZenML store: run {config} first")
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
