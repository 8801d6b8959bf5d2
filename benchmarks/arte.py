"""Tailored training data (ARTE) on the Whisper cascade: the figures of a finished arte_pipeline run.

    python benchmarks/arte.py [--run NAME] [--out benchmarks/results/arte.json]

Needs a finished arte_pipeline run (configs/arte.yaml: 3 seeds) in the local ZenML store; by default the
newest. Writes ``results``, one record a (system, seed) of the run's arte_results (intent accuracy,
SLU-F1, WER, ... as fractions), ``summary`` (mean and sample standard deviation over seeds), the run's
minutes and where they went (seconds per step, and per kind of step: training the students, aligning the
teacher, generating the sets, evaluating), and issue 27's target: tailored data beats random data of the same size
by more than the spread over seeds, on intent accuracy or SLU-F1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
TARGET_METRICS = ("intent_acc", "slu_f1")  # where tailored must beat random


def step_kind(name: str) -> str:
    """``train_tailored_seed2`` -> ``train``; steps outside the per-seed loop keep their name."""
    return re.sub(r"_seed\d+$", "", name).split("_")[0] if re.search(r"_seed\d+$", name) else name


def tailored_vs_random(summary: dict) -> dict:
    """Per compared metric: tailored's mean minus random's (accuracies: higher is better), the larger of
    the two spreads, and whether the gap clears it."""
    out = {}
    for metric in TARGET_METRICS + ("wer",):
        gap = summary["tailored"][f"{metric}_mean"] - summary["random"][f"{metric}_mean"]
        spreads = [summary[s].get(f"{metric}_std") for s in ("tailored", "random")]
        spread = max((s for s in spreads if s == s and s is not None), default=None)  # s == s: not NaN
        better = gap if metric in TARGET_METRICS else -gap
        out[metric] = {"tailored_minus_random_points": 100 * gap, "spread_points": None if spread is None else 100 * spread,
                       "beats_spread": spread is not None and better > spread}
    return out


def run_figures(run_name: str | None) -> dict:
    from zenml.client import Client

    from benchmarks.runs import newest_finished_run

    run = Client().get_pipeline_run(run_name) if run_name else newest_finished_run("arte_pipeline", "configs/arte.yaml")
    outputs = run.steps["arte_results"].outputs
    results = outputs["arte_results"][0].load().to_dict("records")
    summary = {r.pop("system"): r for r in outputs["arte_summary"][0].load().to_dict("records")}
    step_seconds, cached = {}, []
    for name, step in run.steps.items():
        if step.status == "cached":
            cached.append(name)
        elif step.start_time and step.end_time:
            step_seconds[name] = (step.end_time - step.start_time).total_seconds()
    seconds = defaultdict(float)
    for name, s in step_seconds.items():
        seconds[step_kind(name)] += s
    minutes = (run.end_time - run.start_time).total_seconds() / 60 if run.end_time and run.start_time else None
    return {"run": run.name, "run_minutes": minutes, "config": run.config.parameters if run.config else None, "results": results,
            "summary": summary, "seconds_by_step_kind": dict(sorted(seconds.items(), key=lambda kv: -kv[1])), "step_seconds": step_seconds, "cached_steps": cached}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="an arte_pipeline run's name (default: the newest finished one)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/arte.json"))
    args = parser.parse_args()
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    from benchmarks.machine import describe, git_commit

    figures = run_figures(args.run)
    comparison = tailored_vs_random(figures["summary"])
    targets = {
        "tailored_vs_random": comparison,
        "tailored_beats_random_by_more_than_spread": any(comparison[m]["beats_spread"] for m in TARGET_METRICS),
        "bench_minutes": figures["run_minutes"],
        "bench_le_60_minutes": figures["run_minutes"] is not None and figures["run_minutes"] <= 60,
    }
    result = {"machine": describe(), "commit": git_commit(), "config": figures.pop("config"), "results": figures.pop("results"),
              "summary": figures.pop("summary"), "targets": targets, "pipeline": figures}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"summary": result["summary"], "targets": targets}, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
