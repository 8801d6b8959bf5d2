"""Multi-task adaptation: every method's task-averaged scores, parameters and cost, from the newest finished
multitask_pipeline run (configs/multitask.yaml on Whisper, multitask_extended.yaml, or multitask_conformer.yaml),
against the issue's targets.

    zenml pipeline run pipelines.multitask_pipeline.multitask_pipeline -c configs/multitask.yaml
    python benchmarks/multitask.py [--out benchmarks/results/multitask.json]

``systems``: one record a system with ``system``, ``lr``, ``wer``, ``cer``, ``intent_acc``, ``slu_f1`` (means over the jointly trained tasks),
``wer_by_engine`` (the mean over those tasks of each TTS engine), ``wer_by_task``, ``params_per_task``,
``shared_params``, ``seconds_per_step`` (training only), ``step_time_ratio`` (that against per-task full
fine-tuning's, same run), ``minutes`` (its training, new-task and evaluation steps), ``convergence`` (epochs,
best epoch, best and last validation loss, last training loss; joint training only). Targets: HRA at least
4x fewer parameters a task than LoRA at a WER no worse, and lower WER on at least 12 of 16 tasks (here:
3/4 of the tasks); within 1 WER point of full fine-tuning; every adapted system below frozen on every
engine family; the new task's head leaves the old tasks bit-identical.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def newest_runs(n: int) -> list:
    """The newest ``n`` finished multitask_pipeline runs, oldest first."""
    from zenml.client import Client

    runs = [r for r in Client().list_pipeline_runs(pipeline_name="multitask_pipeline", sort_by="desc:created", size=20).items if r.status == "completed"][:n]
    if len(runs) < n:
        raise SystemExit(f"{len(runs)} finished multitask_pipeline run(s) in the local ZenML store, {n} asked for: run configs/multitask.yaml (or another multitask config) first")
    return runs[::-1]


def _original(step):
    """A step run that came from ZenML's cache stands for the run that computed it (its times, its metadata)."""
    if getattr(step, "original_step_run_id", None):
        from zenml.client import Client

        return Client().get_run_step(step.original_step_run_id)
    return step


def _seconds(step) -> float:
    step = _original(step)
    return (step.end_time - step.start_time).total_seconds() if step.start_time and step.end_time else 0.0


def learning_rate(run, system: str) -> float | None:
    """The learning rate a system trained at: its method's own train settings, or the run's train_config (None: frozen)."""
    params = run.config.parameters or {}
    method = (params.get("methods") or {}).get(system.split("+")[0])
    if method is None:  # frozen: nothing trains
        return None
    train = method.get("train") or params.get("train_config") or {}
    return train.get("lr")


def system_records(run, summary, scores, new_task: str) -> list[dict]:
    """The issue's record a system (see the module docstring)."""
    seconds_per_step, convergence = {}, {}
    for name, step in run.steps.items():
        if name.startswith("train_"):
            meta = dict(_original(step).run_metadata)
            system = name[len("train_"):]
            last = meta.get(f"{system}_last_epoch")
            if last:  # joint training (full fine-tuning per task logs epochs per task only)
                convergence[system] = {"epochs": meta.get(f"{system}_epochs"), "best_epoch": meta.get(f"{system}_best_epoch"),
                                       "best_val_loss": meta.get(f"{system}_best_val"), "last_val_loss": last.get("val_loss"), "last_train_loss": last.get("train_loss")}
            steps = meta.get("steps", meta.get(f"{system}_steps"))
            train_s = meta.get("train_seconds", meta.get(f"{system}_train_seconds"))
            if steps and train_s:
                seconds_per_step[system] = float(train_s) / float(steps)
    full = seconds_per_step.get("full_finetuning")
    records = []
    for row in summary.to_dict("records"):
        system = row["system"]
        mine = scores[scores["system"] == system]
        jointly = mine[mine["task"] != new_task]
        engines = sorted(c[len("wer_"):] for c in mine.columns if c.startswith("wer_") and c != "wer_" and mine[c].notna().any())
        base = system.split("+")[0]
        minutes = sum(_seconds(step) for name, step in run.steps.items() if name in (f"train_{base}", f"add_task_{base}_{system.partition('+')[2]}", f"evaluate_{system.replace('+', '_')}"))
        records.append({
            "system": system, "wer": row["wer"], "cer": row["cer"], "intent_acc": row.get("intent_acc"), "slu_f1": row.get("slu_f1"),
            "new_task_wer": row["new_task_wer"],
            "wer_by_engine": {e: float(jointly[f"wer_{e}"].mean()) for e in engines if jointly[f"wer_{e}"].notna().any()},
            "wer_by_task": dict(zip(mine["task"], mine["wer"].astype(float))),
            "params_per_task": row["per_task_params"], "shared_params": row["shared_params"],
            "seconds_per_step": round(seconds_per_step[base], 3) if base in seconds_per_step else None,
            "step_time_ratio": round(seconds_per_step[base] / full, 3) if full and base in seconds_per_step else None,
            "minutes": round(minutes / 60, 2),
            "convergence": convergence.get(base),
        })
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hra", default="hra_linear", help="the HRA system to hold against the target")
    parser.add_argument("--lora", default="lora")
    parser.add_argument("--full", default="full_finetuning")
    parser.add_argument("--runs", type=int, default=1, help="merge the newest N runs (same data and backbone), e.g. a config run in parts; "
                        "a system in several keeps its first (oldest) record, the others' WER go to its 'replicas' "
                        "(trained at another learning rate, it is a system of its own: '<system>@lr<lr>')")
    parser.add_argument("--run", action="append", default=[], help="a run by name (repeat to merge, oldest first); overrides --runs")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/multitask.json"))
    args = parser.parse_args()
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    from benchmarks.machine import describe, git_commit

    systems, runs, curves, unchanged = {}, [], [], None
    from zenml.client import Client

    chosen = [Client().get_pipeline_run(name) for name in args.run] if args.run else newest_runs(args.runs)
    for run in chosen:
        outputs = run.steps["multitask_results"].outputs
        summary, scores = outputs["multitask_results"][0].load(), outputs["multitask_task_scores"][0].load()
        new_task = run.steps["define_tasks"].outputs["new_task"][0].load()
        by_task = scores.set_index(["system", "task"])["wer"]
        grown = f"{args.hra}+head"
        if unchanged is None and grown in set(summary["system"]):
            unchanged = all(by_task[(grown, t)] == by_task[(args.hra, t)] for s, t in by_task.index if s == args.hra)
        for record in system_records(run, summary, scores, new_task):
            record["run"] = run.name
            record["lr"] = learning_rate(run, record["system"])
            first = systems.get(record["system"])
            if first is not None and first["lr"] != record["lr"]:
                record["system"] += f"@lr{record['lr']:g}"
            if record["system"] in systems:
                systems[record["system"]].setdefault("replicas", []).append({"run": run.name, "wer": record["wer"]})
            else:
                systems[record["system"]] = record
        runs.append({"run": run.name, "config": run.config.parameters, "tasks": int(summary["tasks"].max()), "new_task": new_task})
        curves += outputs["parameters_vs_tasks"][0].load().to_dict("records")
    frozen = systems.get("frozen", {}).get("wer_by_engine", {})
    targets = {"systems_above_frozen_on_an_engine": sorted(
        f"{r['system']}:{e}" for r in systems.values() if r["system"] != "frozen" for e, w in r["wer_by_engine"].items() if e in frozen and w >= frozen[e]
    )}
    hra, lora, full = systems.get(args.hra), systems.get(args.lora), systems.get(args.full)
    if hra is not None:  # a run without HRA (e.g. part of the extended config) has only the frozen comparison
        jointly = [t for t in hra["wer_by_task"] if t != runs[-1]["new_task"]]
        targets |= {
            "hra_vs_lora_params_per_task": lora and lora["params_per_task"] / hra["params_per_task"],
            "hra_params_4x_fewer": lora and lora["params_per_task"] >= 4 * hra["params_per_task"],
            "hra_minus_lora_wer_points": lora and 100 * (hra["wer"] - lora["wer"]),
            "hra_wer_no_worse": lora and hra["wer"] <= lora["wer"],
            "hra_better_than_lora_on_tasks": lora and f"{sum(hra['wer_by_task'][t] < lora['wer_by_task'][t] for t in jointly)}/{len(jointly)}",
            "hra_minus_full_finetuning_wer_points": full and 100 * (hra["wer"] - full["wer"]),
        }
    result = {
        "machine": describe(), "commit": git_commit(), "runs": runs, "config": runs[0]["config"] if len(runs) == 1 else [r["config"] for r in runs],
        "systems": list(systems.values()), "parameters_vs_tasks": curves, "old_tasks_unchanged_by_new_head": unchanged, "targets": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"targets": targets, "old_tasks_unchanged_by_new_head": unchanged}, indent=1, default=str))
    for r in systems.values():
        print(f"{r['system']:24s} wer {r['wer']:.4f} {r['wer_by_engine']}  params/task {r['params_per_task']:,.0f}  step x{r['step_time_ratio']}  {r['minutes']} min  {r.get('replicas', '')}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
