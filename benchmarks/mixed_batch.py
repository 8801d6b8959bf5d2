"""One batched forward of mixed tasks against the same batch all of one task, in-process (no HTTP).

    python benchmarks/mixed_batch.py [--threads 2] [--rows 16] [--rounds 7] [--from-dir DIR]
                                     [--out benchmarks/results/mixed_batch.json]

Inputs as benchmarks/serving.py's: the production adapters of ``cascadapt_multitask`` (or --from-dir). The
batch: the --rows test utterances of data/target/manifest.jsonl closest to 3 s. ``single``: every row the
bundle's first task; ``mixed``: row i the bundle's i-th task (one forward, each row its own adapter, in the
encoder and in every cached decoder step). TaskRuntime.predict on the same rows, the two alternating over
--rounds rounds after one warm-up each; medians and their ratio (single's time over mixed's: mixed's
throughput as a share of single's).

Target (issue 28): a mixed-task batch of 16 over 16 tasks >= 0.9x a single-task batch of 16.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.9


def test_rows(n: int, target_s: float = 3.0) -> list[dict]:
    import pandas as pd

    df = pd.read_json(REPO / "data/target/manifest.jsonl", lines=True)
    df = df[df["split"] == "test"].assign(off=lambda d: (d["duration"] - target_s).abs()).sort_values(["off", "utt_id"])
    if len(df) < n:
        raise SystemExit(f"data/target has {len(df)} test utterances; --rows {n} needs more")
    return df.head(n).to_dict("records")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--from-dir", help="a folder with cascade/ and adapters/ instead of the ZenML production model")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/mixed_batch.json"))
    args = parser.parse_args()
    import soundfile as sf
    import torch

    from benchmarks.machine import describe, git_commit
    from benchmarks.serving import load_inputs
    from components.serving.runtime import TaskRuntime

    torch.set_num_threads(args.threads)
    cascade, bundle, source = load_inputs(args.from_dir)
    if len(bundle.tasks) < args.rows:
        raise SystemExit(f"the bundle has {len(bundle.tasks)} tasks; a mixed batch of {args.rows} rows needs as many")
    rows = test_rows(args.rows)
    root = REPO / "data/target"
    waves = [torch.from_numpy(sf.read(str(root / r["noisy_path"]), dtype="float32")[0]) for r in rows]
    runtime = TaskRuntime(cascade, bundle, device="cpu")
    batches = {"single": [bundle.tasks[0]] * args.rows, "mixed": list(bundle.tasks[: args.rows])}
    seconds: dict[str, list[float]] = {name: [] for name in batches}
    for tasks in batches.values():  # warm-up
        runtime.predict(waves, tasks)
    for k in range(args.rounds):
        for name in (("single", "mixed") if k % 2 == 0 else ("mixed", "single")):
            start = time.perf_counter()
            runtime.predict(waves, batches[name])
            seconds[name].append(time.perf_counter() - start)
        print(f"round {k + 1}/{args.rounds}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items()), flush=True)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    ratio = median["single"] / median["mixed"]
    result = {
        "benchmark": "mixed_batch", "machine": describe(), "commit": git_commit(), "source": source,
        "config": {"threads": args.threads, "rows": args.rows, "rounds": args.rounds, "system": bundle.system, "tasks": batches["mixed"],
                   "utterances": [r["utt_id"] for r in rows], "seconds_of_audio": sum(r["duration"] for r in rows)},
        "seconds": seconds, "median_seconds": median, "mixed_over_single": ratio,
        "targets": {"mixed_over_single_min": TARGET, "met": ratio >= TARGET},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"median_seconds": median, "mixed_over_single": ratio}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
