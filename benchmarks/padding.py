"""Whisper's encoder padding after fine-tuning: the 10 s window against each batch's longest clip plus a
margin of silence, in training and in decoding (issue 26, "shorter padding").

    python benchmarks/padding.py [--train-rows 480] [--margins 0 1 2] [--methods lora_r8 hra_linear]
                                 [--out benchmarks/results/padding.json]

Data: the bench's target corpus (``data/target``, built by the multi-task pipeline's ingest: SLURP devel by
the 8 unseen target voices in white/pink/babble noise at 0-20 dB). Training rows: a seeded sample of its
``train`` split; scored on every row of its ``test`` split (noisy clips; the SE is left out, so the figure
is Whisper's own). Backbone: the pre-trained whisper-tiny.en. For every padding, the zero-shot WER, then
each method trained for one epoch of the same batches (length-bucketed, batch 8, AdamW, warm-up then
cosine) at that padding and decoded at that padding. Also reported: the median step time (its ratio to the
10 s window's, same method, same run), the decoding seconds a clip, and ``runaway``: hypotheses with more
than twice their reference's words plus 3 (the loops zero-shot Whisper falls into on short padding).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.machine import describe, git_commit  # noqa: E402
from components import adapters as A  # noqa: E402
from components.data.dataset import SpeechDataset, collate  # noqa: E402
from components.data.manifest import read_manifest  # noqa: E402
from components.data.splits import split_of  # noqa: E402
from components.metrics.asr import wer  # noqa: E402
from components.models.whisper.model import WhisperASR  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BATCH = 8
METHODS = {
    "lora_r8": lambda: A.LoraConfig(target_modules=["@attention"], r=8),
    "hra_linear": lambda: A.HRAConfig(target_modules=["@layer"], r=32),
}


def batches(ds: SpeechDataset, rows: list[int], shuffle_seed: int | None) -> list[dict]:
    """Rows sorted by duration, cut into batches of BATCH (so a batch's clips are alike in length), in a seeded order."""
    rows = sorted(rows, key=lambda i: ds.lengths[i])
    chunks = [rows[i : i + BATCH] for i in range(0, len(rows), BATCH)]
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(chunks)
    return [collate([ds[i] for i in chunk]) for chunk in chunks]


def set_padding(asr: WhisperASR, margin: float | None) -> None:
    """None: the 10 s window; a number: each batch's longest clip plus that many seconds."""
    asr.config.pad_to, asr.config.margin_seconds = ("context", 0.0) if margin is None else ("longest", margin)


def score(asr: WhisperASR, test: list[dict]) -> dict:
    asr.eval()
    refs, hyps, seconds, frames = [], [], 0.0, []
    with torch.no_grad():
        for b in test:
            start = time.perf_counter()
            out = asr(b["noisy"], b["lengths"])
            seconds += time.perf_counter() - start
            frames.append(asr.frames(b["lengths"]))
            refs += [m["text"] for m in b["meta"]]
            hyps += out["texts"]
    runaway = sum(len(h.split()) > 2 * len(r.split()) + 3 for r, h in zip(refs, hyps))
    return {
        "wer": round(100 * wer(refs, hyps), 2), "runaway": runaway, "decode_s_per_clip": round(seconds / len(refs), 4),
        "mel_frames_mean": round(statistics.mean(frames), 1), "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:3]],
    }


def train(asr: WhisperASR, config: A.AdapterConfig, train_batches: list[dict], lr: float, seed: int) -> dict:
    """One epoch of ``train_batches`` with adapter ``config``; it stays attached as "bench" (the caller removes it)."""
    torch.manual_seed(seed)
    A.add_adapter(asr, config, name="bench", tasks=["task"])
    A.freeze_backbone(asr)
    params = [p for p in asr.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, fused=True)
    total, warmup = len(train_batches), max(1, len(train_batches) // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    asr.train()
    step_s, losses = [], []
    for b in train_batches:
        start = time.perf_counter()
        targets, target_lengths = asr.encode_targets([m["text"] for m in b["meta"]])
        loss = asr.loss(asr(b["noisy"], b["lengths"], targets, target_lengths, words=False), targets, target_lengths)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        step_s.append(time.perf_counter() - start)
        losses.append(loss.item())
    return {"step_s_median": round(statistics.median(step_s), 4), "train_minutes": round(sum(step_s) / 60, 2), "trainable_params": sum(p.numel() for p in params),
            "loss_first_last": [round(statistics.mean(losses[:5]), 4), round(statistics.mean(losses[-5:]), 4)]}


def target_rows(corpus: Path, split: str, n: int | None, seed: int | None) -> tuple[SpeechDataset, list[int]]:
    """The corpus and the indices of its ``split`` rows: a seeded sample of ``n`` (seed None: the first ``n``; n None: all)."""
    manifest = corpus / "manifest.jsonl"
    if not manifest.is_file():
        sys.exit(f"{manifest}: no target corpus; build it with the multi-task pipeline's ingest "
                 "(zenml pipeline run pipelines.multitask_pipeline.multitask_pipeline -c configs/multitask.yaml), or pass --corpus")
    df = read_manifest(manifest)
    rows = [i for i, s in enumerate(df["slurp_id"]) if split_of(int(s)) == split]
    if n is not None:
        rows = random.Random(seed).sample(rows, n) if seed is not None else rows[:n]
    return SpeechDataset(df, corpus), rows


def common_arguments(ap: argparse.ArgumentParser) -> None:
    """The corpus, the training sample, the seed and the threads (this bench and tune_adapters.py)."""
    ap.add_argument("--corpus", type=Path, default=REPO / "data/target")
    ap.add_argument("--train-rows", type=int, default=480)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(ap)
    ap.add_argument("--test-rows", type=int, default=None, help="the first N test rows (default: all)")
    ap.add_argument("--margins", type=float, nargs="+", default=[0.0, 1.0, 2.0], help="seconds of silence after a batch's longest clip")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/padding.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds, train_rows = target_rows(args.corpus, "train", args.train_rows, args.seed)
    _, test_rows = target_rows(args.corpus, "test", args.test_rows, None)
    train_batches, test_batches = batches(ds, train_rows, args.seed), batches(ds, test_rows, None)
    asr = WhisperASR.pretrained("whisper-tiny.en", context_seconds=10)
    paddings = [("10 s window", None)] + [(f"longest + {m:g} s", m) for m in args.margins]
    rows = []
    for label, margin in paddings:
        set_padding(asr, margin)
        row = {"padding": label, "pad_to": asr.config.pad_to, "margin_seconds": asr.config.margin_seconds, "zero_shot": score(asr, test_batches)}
        print(label, "zero-shot", {k: v for k, v in row["zero_shot"].items() if k != "examples"}, flush=True)
        for method in args.methods:
            trained = train(asr, METHODS[method](), train_batches, args.lr, args.seed)
            trained |= score(asr, test_batches)
            A.remove_adapter(asr, "bench")
            row[method] = trained
            print(label, method, {k: v for k, v in trained.items() if k != "examples"}, flush=True)
        rows.append(row)
    window = rows[0]
    for row in rows:
        for method in args.methods:
            row[method]["step_time_ratio"] = round(row[method]["step_s_median"] / window[method]["step_s_median"], 3)
            row[method]["decode_time_ratio"] = round(row[method]["decode_s_per_clip"] / window[method]["decode_s_per_clip"], 3)
    result = {
        "benchmark": "padding", "machine": describe(),
        "commit": git_commit(),
        "config": {"corpus": str(args.corpus), "train_rows": len(train_rows), "test_rows": len(test_rows), "batch": BATCH, "epochs": 1, "lr": args.lr,
                   "seed": args.seed, "threads": args.threads, "backbone": "whisper-tiny.en", "context_seconds": 10, "methods": args.methods},
        "paddings": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
