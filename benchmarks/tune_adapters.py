"""Learning rate and width of HRA and LoRA (and prompt and prefix tuning) on Whisper, chosen on ``nas_val`` (never on test).

    python benchmarks/tune_adapters.py [--train-rows 480] [--out benchmarks/results/tune_adapters.json]

The setting of benchmarks/padding.py at the multi-task configs' padding (each batch's longest clip + 1 s):
the pre-trained whisper-tiny.en, a seeded sample of the target corpus's train rows, one epoch of the same
length-bucketed batches for every candidate, each scored on every noisy ``nas_val`` row. Every method gets
the same learning-rate grid; HRA also gets a wider controller (its per-task head grows with r).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.machine import describe, git_commit  # noqa: E402
from benchmarks.padding import batches, common_arguments, score, set_padding, target_rows, train  # noqa: E402
from components import adapters as A  # noqa: E402
from components.models.whisper.model import WhisperASR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# candidate -> adapter config, as the multi-task configs write it (targets on the bare ASR)
CANDIDATES = {
    "lora_r8": lambda: A.LoraConfig(target_modules=["@attention"], r=8),
    "hra_linear_r32": lambda: A.HRAConfig(target_modules=["@layer"], r=32),
    "hra_linear_r64": lambda: A.HRAConfig(target_modules=["@layer"], r=64),
    "hra_ffn_r32": lambda: A.HRAConfig(target_modules=["@layer"], r=32, head="ffn", ffn_dim=64),
    "hra_linear_r32_norm": lambda: A.HRAConfig(target_modules=["@layer"], r=32, input_norm=True),
    "hra_ffn_r32_norm": lambda: A.HRAConfig(target_modules=["@layer"], r=32, head="ffn", ffn_dim=64, input_norm=True),
    # as configs/multitask_extended.yaml has them: 8 learnt decoder prompts; 8 prefixes in every self-attention
    "prompt_8": lambda: A.PromptConfig(target_modules=["@decoder"], num_virtual_tokens=8),
    "prefix_8": lambda: A.PrefixConfig(target_modules=["@attention"], num_virtual_tokens=8),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(ap)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2])
    ap.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/tune_adapters.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds, train_rows = target_rows(args.corpus, "train", args.train_rows, args.seed)
    _, val_rows = target_rows(args.corpus, "nas_val", None, None)
    train_batches, val_batches = batches(ds, train_rows, args.seed), batches(ds, val_rows, None)
    asr = WhisperASR.pretrained("whisper-tiny.en", context_seconds=10)
    set_padding(asr, args.margin)
    rows = []
    for name in args.candidates:
        for lr in args.lrs:
            trained = train(asr, CANDIDATES[name](), train_batches, lr, args.seed)
            scored = score(asr, val_batches)
            A.remove_adapter(asr, "bench")
            rows.append({"candidate": name, "lr": lr, **trained, "nas_val_wer": scored["wer"], "nas_val_runaway": scored["runaway"]})
            print(name, lr, {k: v for k, v in rows[-1].items() if k not in ("candidate", "lr")}, flush=True)
    best = {name: min((r for r in rows if r["candidate"] == name), key=lambda r: r["nas_val_wer"]) for name in args.candidates}
    result = {
        "benchmark": "tune_adapters", "machine": describe(),
        "commit": git_commit(),
        "config": {"corpus": str(args.corpus), "train_rows": len(train_rows), "nas_val_rows": len(val_rows), "epochs": 1, "lrs": args.lrs,
                   "margin_seconds": args.margin, "seed": args.seed, "threads": args.threads, "backbone": "whisper-tiny.en"},
        "runs": rows,
        "best": {name: {"lr": r["lr"], "nas_val_wer": r["nas_val_wer"]} for name, r in best.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("best on nas_val:", result["best"])


if __name__ == "__main__":
    main()
