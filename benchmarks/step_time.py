"""Training step time of each multi-task method on the Whisper cascade, relative to a full fine-tuning step
of the same batch, with and without the frozen-front cache, and where each step's time goes.

    python benchmarks/step_time.py [--repeats 8] [--threads 2] [--device auto] [--margin S] [--out benchmarks/results/step_time.json]

Cascade: the pre-trained Whisper tiny.en (10 s window; with ``--margin S``, each batch's longest clip plus
S seconds, the multi-task configs' padding, where no front is cached) behind a fresh SE (hidden 128, 2 layers) and
MiniLM; the loss is the multi-task one (enhanced_asr_loss: Whisper's token cross-entropy on the SE's
output of the noisy clip, the SE frozen). Batch: 8 noisy held-out-style commands synthesized from the
shipped SLURP sample by 8 target voices (2-4 s each), their SLURP transcripts as targets.

Step = zero_grad + the frozen front (SE -> log-mel [-> encoder]) + forward + loss + backward + fused AdamW
over the trainable parameters. ``cached`` rows read the front from a warm FrontCache (features for
methods that adapt the encoder, encoder states for decoder-only ones). Systems run round-robin, one
step each per round, in a new order every round (after 2 warm-up rounds), so a slow spell of this
shared machine hits all alike; a figure is the median over rounds, and its ratio is to full fine-tuning
uncached, in the same run. The phases (front, forward, backward, optimizer) are timed inside each step.

Targets (issue 26): bottleneck <= 0.45x, LoRA <= 0.55x, HRA <= 0.5x, decoder-only methods on cached
encoder states <= 0.2x.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.machine import describe, git_commit  # noqa: E402
from components import adapters as A  # noqa: E402
from components.models.cascade import asr_targets  # noqa: E402
from components.training.front_cache import FrontCache  # noqa: E402
from components.training.loop import to_device  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WARMUP = 2
DECODER_ATTENTION = [f"asr:model.decoder.layers.*.{a}.{p}_proj" for a in ("self_attn", "encoder_attn") for p in ("q", "v")]
# system -> adapter config (None: full fine-tuning of the ASR)
SYSTEMS = {
    "full_finetuning": None,
    "bottleneck": lambda: A.BottleneckConfig(target_modules=["asr:@layer"], reduction_factor=8),
    "lora_r8": lambda: A.LoraConfig(target_modules=["asr:@attention"], r=8),
    "hra_linear": lambda: A.HRAConfig(target_modules=["asr:@layer"], r=32),
    "hra_ffn": lambda: A.HRAConfig(target_modules=["asr:@layer"], r=32, head="ffn", ffn_dim=64),
    "bitfit": lambda: A.BitFitConfig(target_modules=["asr:@layer"]),
    "prefix": lambda: A.PrefixConfig(target_modules=["asr:@attention"], num_virtual_tokens=8),
    "decoder_lora_r8": lambda: A.LoraConfig(target_modules=[p.replace("asr:", "asr.whisper.") for p in DECODER_ATTENTION], r=8),
    "decoder_prompt": lambda: A.PromptConfig(target_modules=["asr:@decoder"], num_virtual_tokens=8),
}


def build_cascade():
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer, SEConfig
    from components.models.whisper.model import WhisperASR

    torch.manual_seed(0)
    labels = NluLabels.from_label_set()
    return Cascade(MaskEnhancer(SEConfig(hidden=128, layers=2)), WhisperASR.pretrained("whisper-tiny.en", context_seconds=10), build_nlu(labels), labels)


def speech_batch(n: int = 8) -> dict:
    from components.data.corpus import CorpusConfig, build_corpus
    from components.data.dataset import SpeechDataset, collate
    from components.data.manifest import read_manifest
    from components.data.slurp import read_slurp
    from components.data.speakers import parse_voices

    out = Path(tempfile.mkdtemp(prefix="cascadapt-step-time-"))
    records = read_slurp(REPO / "components/data/sample/slurp_devel_sample.jsonl")[:n]
    config = CorpusConfig(parse_voices("target"), speakers_per_text=1, snrs=[5.0, 10.0], noise_kinds=["pink", "babble"], workers=2)
    ds = SpeechDataset(read_manifest(build_corpus(records, out, config, progress=False)), out)
    return collate([ds[i] for i in range(len(ds))])


def build_systems(cascade, device: torch.device, cached_rows: bool = True) -> dict[str, dict]:
    systems = {}
    for name, make in SYSTEMS.items():
        model = copy.deepcopy(cascade).to(device)
        if make is None:
            for pname, p in model.named_parameters():
                p.requires_grad_(pname.startswith("asr."))
        else:
            A.add_adapter(model, make(), name="bench", tasks=["task"])
            A.freeze_backbone(model)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-5, fused=True)
        for cached in (False, True) if cached_rows else (False,):
            systems[f"{name}{'_cached' if cached else ''}"] = {"model": model, "params": params, "optimizer": optimizer, "cache": FrontCache(4096) if cached else None}
    return systems


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_step(s: dict, b: dict, device: torch.device) -> dict[str, float]:
    """One step; seconds of each phase and in all."""
    model, asr = s["model"], s["model"].asr
    model.train()
    times = {}
    t0 = time.perf_counter()
    s["optimizer"].zero_grad(set_to_none=True)
    targets, lengths = asr_targets(asr, b)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        front = s["cache"].front(model, b) if s["cache"] is not None else None
        if front is None:
            with torch.no_grad():
                audio = model.se(b["noisy"], b["lengths"])
                front = ("features", asr.log_mel(audio, asr.frames(b["lengths"])))
        sync(device)
        times["front"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        loss = asr.loss(asr(b["noisy"], b["lengths"], targets, lengths, words=False, front=front), targets, lengths)
    sync(device)
    times["forward"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    loss.backward()
    sync(device)
    times["backward"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    s["optimizer"].step()
    sync(device)
    times["optimizer"] = time.perf_counter() - t1
    times["step"] = time.perf_counter() - t0
    return times


def round_robin(names: list[str], fn, repeats: int, seed: int) -> dict[str, dict[str, float]]:
    """Median seconds of each phase per name; one call each per round, order reshuffled every round."""
    rng = random.Random(seed)
    times: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(WARMUP + repeats):
        order = names[:]
        rng.shuffle(order)
        for n in order:
            t = fn(n)
            if r >= WARMUP:
                times[n].append(t)
        print(f"round {r + 1}/{WARMUP + repeats}", file=sys.stderr, flush=True)
    return {n: {k: statistics.median(t[k] for t in ts) for k in ts[0]} for n, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--margin", type=float, default=None, help="pad to each batch's longest clip plus this many seconds (default: the 10 s window)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/step_time.json (step_time_margin<S>.json with --margin)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device))
    out = args.out or REPO / "benchmarks/results" / ("step_time.json" if args.margin is None else f"step_time_margin{args.margin:g}.json")
    b = to_device(speech_batch(), device)
    cascade = build_cascade()
    if args.margin is not None:
        cascade.asr.configure(pad_to="longest", margin_seconds=args.margin)
    systems = build_systems(cascade, device, cached_rows=args.margin is None)
    medians = round_robin(list(systems), lambda n: train_step(systems[n], b, device), args.repeats, seed=1)
    reference = medians["full_finetuning"]["step"]
    rows = []
    for name, m in medians.items():
        s = systems[name]
        level = s["cache"].level(s["model"])[0] if s["cache"] is not None else None
        rows.append({
            "system": name, "cached_level": level, "step_s": round(m["step"], 4), "step_time_ratio": round(m["step"] / reference, 3),
            "phases_s": {k: round(v, 4) for k, v in m.items() if k != "step"}, "trainable_params": sum(p.numel() for p in s["params"]),
        })
    result = {
        "benchmark": "step_time", "machine": describe(), "commit": git_commit(),
        "config": {"repeats": args.repeats, "threads": args.threads, "device": str(device), "batch": int(b["noisy"].shape[0]),
                   "clip_seconds": [round(n / 16000, 2) for n in b["lengths"].tolist()], "context_seconds": 10, "backbone": "whisper-tiny.en",
                   "asr_options": cascade.asr.runtime_settings(), "mel_frames": cascade.asr.frames(b["lengths"])},
        "systems": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for r in rows:
        print(f"{r['system']:28s} {r['step_s']:7.3f} s  x{r['step_time_ratio']:.3f}  {r['cached_level'] or '-':15s} {r['phases_s']}")


if __name__ == "__main__":
    main()
