"""Multi-task adaptation: every method's task-averaged scores and parameters, from the newest finished
multitask_pipeline run (configs/multitask.yaml on Whisper, or multitask_conformer.yaml), against the issue's target.

    zenml pipeline run pipelines.multitask_pipeline.multitask_pipeline -c configs/multitask.yaml
    python benchmarks/multitask.py [--out benchmarks/results/multitask.json]

Target: HRA's parameters a task at least 4x fewer than LoRA's, at a mean WER (over the jointly trained
tasks) no worse than LoRA's. Also: each training step's duration, the new task's WER per method, the
parameters-vs-tasks curve, and whether adding the new task left the old tasks' scores unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def newest_run():
    from zenml.client import Client

    for run in Client().list_pipeline_runs(pipeline_name="multitask_pipeline", sort_by="desc:created", size=10).items:
        if run.status == "completed":
            return run
    raise SystemExit("no finished multitask_pipeline run in the local ZenML store: run configs/multitask.yaml (or multitask_conformer.yaml) first")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hra", default="hra_linear", help="the HRA system to hold against the target")
    parser.add_argument("--lora", default="lora")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/multitask.json"))
    args = parser.parse_args()
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    from benchmarks.machine import describe

    run = newest_run()
    outputs = run.steps["multitask_results"].outputs
    summary = outputs["multitask_results"][0].load()
    scores = outputs["multitask_task_scores"][0].load()
    curve = outputs["parameters_vs_tasks"][0].load()
    new_task = run.steps["define_tasks"].outputs["new_task"][0].load()
    rows = {r["system"]: r for r in summary.to_dict("records")}
    hra, lora = rows[args.hra], rows[args.lora]

    by_task = scores.set_index(["system", "task"])["wer"]
    grown = f"{args.hra}+head"
    unchanged = None
    if grown in rows:
        old = [t for s, t in by_task.index if s == args.hra]
        unchanged = all(by_task[(grown, t)] == by_task[(args.hra, t)] for t in old)
    seconds = {name: (s.end_time - s.start_time).total_seconds() for name, s in run.steps.items() if name.startswith(("train_", "add_task_")) and s.start_time and s.end_time}
    targets = {
        "hra_vs_lora_params_per_task": lora["per_task_params"] / hra["per_task_params"],
        "hra_params_4x_fewer": lora["per_task_params"] >= 4 * hra["per_task_params"],
        "hra_minus_lora_wer_points": 100 * (hra["wer"] - lora["wer"]),
        "hra_wer_no_worse": hra["wer"] <= lora["wer"],
    }
    result = {
        "machine": describe(), "run": run.name, "tasks": int(summary["tasks"].max()), "new_task": new_task, "results": summary.to_dict("records"),
        "parameters_vs_tasks": curve.to_dict("records"), "step_seconds": seconds, "old_tasks_unchanged_by_new_head": unchanged, "targets": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(summary.to_string(index=False))
    print(json.dumps({"targets": targets, "old_tasks_unchanged_by_new_head": unchanged, "step_seconds": seconds}, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
