"""Every adapter method on the ASR backbone: trainable parameters, training step time and memory
relative to full fine-tuning, inference latency relative to the frozen backbone, and our LoRA
against peft's LoRA on the same model.

    python benchmarks/adapters.py [--threads 2] [--repeats 40] [--device auto] [--out benchmarks/results/adapters.json]

Backbone: ConformerCTC(ASRConfig()) (d=144, 4 Conformer layers, 2.5M parameters), fresh weights
(timing does not depend on them). Batch: 8 utterances of 2.5 s (white noise: the compute is
the same as for speech) with 20-character CTC targets.

Train step = zero_grad + forward + CTC loss + backward + AdamW step over the trainable
parameters. Variants run round-robin, one step each per round, in a new random order every
round (after 3 warm-up rounds), so a slow spell of this shared machine hits all of them alike;
the figure is each variant's median and its ratio to full fine-tuning's median.
Inference: eval mode, no_grad, forward on the same batch, same round-robin (4 x --repeats rounds), ratio to the
frozen backbone without adapters. ``lora_merged`` is LoRA with its update folded into the weights
(adapter still on, tasks switchable); ``lora_merged_unloaded`` after merge_and_unload (the plain tree).

Memory (device-agnostic, exact): ``activation_mib`` = tensors autograd saves for backward
(parameters excluded, each storage once) + ``optimizer_mib`` = gradients and AdamW's two
moments of the trainable parameters (3 x 4 bytes each). On CUDA also the allocator's peak.

peft: our LoRA and peft's LoRA (r 8, alpha 16) on the same FFN Linears of identical copies
(peft cannot adapt torch's MultiheadAttention projections, see attention.py), timed in the
same round-robin and then in an A/B of the two alone (8 x --repeats rounds), which gives the ratio. Targets: adapter step <= 0.7 x full FT; inference overhead <= 5 % except
prompt/prefix; our LoRA step <= peft's.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.machine import describe  # noqa: E402
from benchmarks.memory import adamw_state_mib, saved_for_backward_mib  # noqa: E402
from components import adapters as A  # noqa: E402
from components.models.asr import ASRConfig, ConformerCTC, ctc_loss  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FFN_LINEARS = [f"encoder.conformer_layers.{i}.ffn{j}.sequential.{k}" for i in range(4) for j in (1, 2) for k in (1, 4)]
WARMUP = 3
NO_OVERHEAD_TARGET = {"prompt", "prefix"}  # methods that lengthen the sequence: exempt from the 5 % target

# variant -> adapter config on the ASR backbone (the method's documented defaults unless said)
BENCH = {
    "bottleneck": lambda: A.BottleneckConfig(),
    "houlsby": lambda: A.HoulsbyConfig(),
    "pfeiffer": lambda: A.PfeifferConfig(),
    "gated": lambda: A.GatedConfig(),
    "shared": lambda: A.SharedConfig(),
    "lora": lambda: A.LoraConfig(),
    "lora_ffn": lambda: A.LoraConfig(target_modules=FFN_LINEARS),
    "bitfit": lambda: A.BitFitConfig(),
    "compacter": lambda: A.CompacterConfig(reduction_factor=12),  # bottleneck 12: phm_dim 4 divides 144 and 12
    "hyperformer": lambda: A.HyperformerConfig(),
    "hra": lambda: A.HRAConfig(),
    "poly": lambda: A.PolyConfig(),
    "mhr": lambda: A.MhrConfig(),
    "mhr_z": lambda: A.MhrZConfig(),
    "mhr_mu": lambda: A.MhrMuConfig(),
    "prompt": lambda: A.PromptConfig(),
    "prefix": lambda: A.PrefixConfig(),
}


def build_variants(device: torch.device) -> dict[str, dict]:
    torch.manual_seed(0)
    backbone = ConformerCTC(ASRConfig())
    variants = {"full": {"model": copy.deepcopy(backbone), "method": None}, "frozen": {"model": copy.deepcopy(backbone), "method": None}}
    head = copy.deepcopy(backbone)
    for p in head.parameters():
        p.requires_grad_(False)
    head.ctc_head.requires_grad_(True)
    variants["head_only"] = {"model": head, "method": None}
    for name, make in BENCH.items():
        model = copy.deepcopy(backbone)
        method = A.add_adapter(model, make(), name="bench", tasks=["asr"])
        A.freeze_backbone(model)
        variants[name] = {"model": model, "method": method}
    import peft

    theirs = peft.get_peft_model(copy.deepcopy(backbone), peft.LoraConfig(r=8, lora_alpha=16, target_modules=FFN_LINEARS))
    variants["peft_lora_ffn"] = {"model": theirs, "method": None}
    for name, v in variants.items():
        v["model"].to(device)
        if name == "frozen":
            for p in v["model"].parameters():
                p.requires_grad_(False)
        v["params"] = [p for p in v["model"].parameters() if p.requires_grad]
        v["optimizer"] = torch.optim.AdamW(v["params"], lr=1e-4) if v["params"] else None
    return variants


def batch(device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(8, 40_000, generator=g) * 0.1
    return {
        "wave": wave.to(device),
        "lengths": torch.full((8,), 40_000, device=device),
        "targets": torch.randint(1, 28, (8, 20), generator=g).to(device),
        "target_lengths": torch.full((8,), 20, device=device),
    }


def train_step(v: dict, b: dict, device: torch.device) -> float:
    v["model"].train()
    t0 = time.perf_counter()
    v["optimizer"].zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = v["model"](b["wave"], b["lengths"])
    ctc_loss(out, b["targets"], b["target_lengths"]).backward()
    v["optimizer"].step()
    sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def infer(v: dict, b: dict, device: torch.device) -> float:
    v["model"].eval()
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        v["model"](b["wave"], b["lengths"])
    sync(device)
    return time.perf_counter() - t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def round_robin(names: list[str], fn, repeats: int, seed: int) -> dict[str, float]:
    """Median seconds per name; one call each per round, order reshuffled every round."""
    rng = random.Random(seed)
    times = {n: [] for n in names}
    for r in range(WARMUP + repeats):
        order = names[:]
        rng.shuffle(order)
        for n in order:
            seconds = fn(n)
            if r >= WARMUP:
                times[n].append(seconds)
    return {n: statistics.median(t) for n, t in times.items()}


def training_memory(v: dict, b: dict, device: torch.device) -> dict:
    """Bytes autograd saves for backward and gradient + AdamW state bytes (see benchmarks/memory.py)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    out = {
        "activation_mib": saved_for_backward_mib(v["model"], lambda: ctc_loss(v["model"](b["wave"], b["lengths"]), b["targets"], b["target_lengths"])),
        "optimizer_mib": adamw_state_mib(v["params"]),
    }
    if device.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/adapters.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    variants = build_variants(device)
    b = batch(device)

    trainable = {n: sum(p.numel() for p in v["params"]) for n, v in variants.items()}
    total = sum(p.numel() for p in variants["full"]["model"].parameters())
    memory = {n: training_memory(v, b, device) for n, v in variants.items() if v["params"]}
    print("memory measured", flush=True)
    train_names = [n for n, v in variants.items() if v["params"]]
    step = round_robin(train_names, lambda n: train_step(variants[n], b, device), args.repeats, seed=1)
    # ours vs peft differ by a few percent at most: a longer A/B of just the two pins the ratio down
    duel = round_robin(["lora_ffn", "peft_lora_ffn"], lambda n: train_step(variants[n], b, device), 8 * args.repeats, seed=3)
    print("training steps timed", flush=True)

    merged = copy.deepcopy(variants["lora"]["model"])
    A.get_adapter(merged, "bench").merge("asr")
    variants["lora_merged"] = {"model": merged}
    variants["lora_merged_unloaded"] = {"model": A.merge_and_unload(copy.deepcopy(variants["lora"]["model"]), "bench", "asr")}
    infer_names = [n for n in variants if n not in ("full", "head_only")]
    latency = round_robin(infer_names, lambda n: infer(variants[n], b, device), 4 * args.repeats, seed=2)  # a forward is cheap: more rounds
    print("inference timed", flush=True)

    rows = {}
    for n in variants:
        row = {"trainable_params": trainable.get(n, 0), "trainable_pct": 100 * trainable.get(n, 0) / total}
        if n in step:
            row |= {"train_step_ms": 1000 * step[n], "train_step_vs_full": step[n] / step["full"], **memory[n]}
            row["memory_vs_full"] = (memory[n]["activation_mib"] + memory[n]["optimizer_mib"]) / (memory["full"]["activation_mib"] + memory["full"]["optimizer_mib"])
        if n in latency:
            row |= {"inference_ms": 1000 * latency[n], "inference_vs_frozen": latency[n] / latency["frozen"]}
        rows[n] = row
    adapters = [n for n in BENCH]
    targets = {
        "adapter_step_le_0.7x_full": {n: rows[n]["train_step_vs_full"] <= 0.7 for n in adapters},
        "inference_overhead_le_5pct": {n: rows[n]["inference_vs_frozen"] <= 1.05 for n in [*adapters, "lora_merged", "lora_merged_unloaded"] if n not in NO_OVERHEAD_TARGET},
        "our_lora_vs_peft_step": duel["lora_ffn"] / duel["peft_lora_ffn"],
        "our_lora_le_peft": duel["lora_ffn"] <= duel["peft_lora_ffn"],
    }
    result = {
        "machine": describe(),
        "device": str(device),
        "threads": args.threads,
        "repeats": args.repeats,
        "backbone_params": total,
        "not_benchmarked": sorted(set(A.METHODS) - set(BENCH)),
        "rows": rows,
        "targets": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{'variant':16s} {'train %':>8s} {'step ms':>8s} {'vs full':>8s} {'mem vs full':>11s} {'infer ms':>9s} {'vs frozen':>9s}")
    for n, r in rows.items():
        print(f"{n:16s} {r['trainable_pct']:8.2f} {r.get('train_step_ms', float('nan')):8.1f} {r.get('train_step_vs_full', float('nan')):8.2f} "
              f"{r.get('memory_vs_full', float('nan')):11.2f} {r.get('inference_ms', float('nan')):9.1f} {r.get('inference_vs_frozen', float('nan')):9.3f}")
    print(json.dumps(targets, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
