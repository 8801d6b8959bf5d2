"""Parameters and memory of N tasks resident on one Whisper tiny.en, N = 1 ... 64, per method.

    python benchmarks/task_scaling.py [--tasks 1,2,4,8,16,32,64] [--out benchmarks/results/task_scaling.json]

Tasks are the 64 of the extended task grid (8 target voices x 4 pitch/rate variants x 2 noise kinds);
only their number matters here. Per method and N: adapter parameters in all (shared + N task parts), the
mean per task (``(shared + sum of task parts) / N``, what the HRA paper plots), and the resident bytes of
the model with every task attached (parameters and buffers, each storage once) against the bare
backbone; then one mixed batch of N rows (one a task, 2 s of audio each, batch 16 at most) through the
encoder and teacher-forced decoder, eval mode, with its time against the backbone alone. Memory is
exact (bytes of tensors), not a process RSS, so a shared machine does not blur it.

Targets (issue 26): per-task parameters grow sub-linearly; 64 tasks resident <= 1.1x the memory of one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.machine import describe, git_commit  # noqa: E402
from components import adapters as A  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "hra_linear": lambda: A.HRAConfig(target_modules=["@layer"], r=32),
    "hra_ffn": lambda: A.HRAConfig(target_modules=["@layer"], r=32, head="ffn", ffn_dim=64),
    "lora_r8": lambda: A.LoraConfig(target_modules=["@attention"], r=8),
    "bottleneck": lambda: A.BottleneckConfig(target_modules=["@layer"], reduction_factor=8),
    "bitfit": lambda: A.BitFitConfig(target_modules=["@layer"]),
}


def task_names(n: int) -> list[str]:
    grid = [f"v{v}_p{p}_{noise}" for v in range(8) for p in range(4) for noise in ("pink", "babble")]
    return grid[:n]


def resident_bytes(model: torch.nn.Module) -> int:
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


@torch.no_grad()
def forward_seconds(asr, n: int, repeats: int = 3) -> float:
    """Median seconds of one mixed batch (a row a task, at most 16 rows) through encoder and teacher-forced decoder."""
    rows = min(n, 16)
    wave, lengths = torch.randn(rows, 32000, generator=torch.Generator().manual_seed(0)) * 0.1, torch.full((rows,), 32000)
    targets, target_lengths = asr.encode_targets(["set an alarm for five am"] * rows)
    if hasattr(asr.whisper, A.inject.ADAPTERS):
        A.get_adapter(asr.whisper, "bench").set_task(list(range(rows)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        asr(wave, lengths, targets, target_lengths, words=False)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default="1,2,4,8,16,32,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/task_scaling.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from components.models.whisper.model import WhisperASR

    counts = [int(n) for n in args.tasks.split(",")]
    asr = WhisperASR.pretrained("whisper-tiny.en", context_seconds=10).eval()
    backbone_bytes = resident_bytes(asr)
    backbone_seconds = forward_seconds(asr, max(counts))
    rows = []
    for method, make in METHODS.items():
        for n in counts:
            adapter = A.add_adapter(asr.whisper, make(), name="bench", tasks=task_names(n))
            entry = A.adapter_report(asr.whisper)["adapters"]["bench"]
            task_total = sum(entry["tasks"].values())
            rows.append({
                "method": method, "tasks": n, "shared_params": entry["shared"], "task_params": task_total // n, "adapter_params": entry["total"],
                "params_per_task": round(entry["total"] / n, 1), "memory_ratio": round(resident_bytes(asr) / backbone_bytes, 4),
                "forward_ratio": round(forward_seconds(asr, n) / backbone_seconds, 3) if n == max(counts) else None,
            })
            A.remove_adapter(asr.whisper, "bench")
            del adapter
            print(rows[-1], file=sys.stderr, flush=True)
    one = {r["method"]: r["memory_ratio"] for r in rows if r["tasks"] == min(counts)}
    for r in rows:
        r["memory_vs_fewest_tasks"] = round(r["memory_ratio"] / one[r["method"]], 4)
    result = {
        "benchmark": "task_scaling", "machine": describe(), "commit": git_commit(),
        "config": {"backbone": "whisper-tiny.en", "context_seconds": 10, "backbone_bytes": backbone_bytes, "tasks": counts, "threads": args.threads,
                   "methods": {m: make().to_dict() for m, make in METHODS.items()}},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        if r["tasks"] in (1, max(counts)):
            print(f"{r['method']:12s} N={r['tasks']:3d} params/task {r['params_per_task']:>12,.1f}  memory x{r['memory_ratio']:.4f} of the backbone, x{r['memory_vs_fewest_tasks']:.4f} of one task  forward x{r['forward_ratio']}")


if __name__ == "__main__":
    main()
