"""The quality table: frozen vs fully fine-tuned cascade (and pocketsphinx) on the target test split.

    python benchmarks/quality.py [--config configs/baselines.yaml] [--out benchmarks/results/quality.json]

Runs the baseline pipeline with the config (on the newest finished
cascadapt_backbones; run the pretrain pipeline first), times it, and writes
its results table with the machine description. Rates are fractions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs/baselines.yaml"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/quality.json"))
    args = parser.parse_args()

    from zenml.client import Client

    from pipelines.baseline_pipeline import baseline_pipeline

    t0 = time.perf_counter()
    run = baseline_pipeline.with_options(config_path=args.config)()
    seconds = time.perf_counter() - t0
    run = Client().get_pipeline_run(run.id)
    table = run.steps["results_table"].outputs["results"][0].load()
    backbone = run.steps["evaluate_frozen"].inputs["cascade"][0]
    result = {
        "benchmark": "quality",
        "machine": describe(),
        "config": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_relative_to(REPO) else args.config,
        "pipeline_seconds": round(seconds, 1),
        "backbone_artifact": {"name": backbone.name, "version": str(backbone.version), "id": str(backbone.id)},
        "run": run.name,
        "results": table.to_dict("records"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table.to_string(index=False))
    print(f"pipeline: {seconds / 60:.1f} min; wrote {args.out}")


if __name__ == "__main__":
    main()
