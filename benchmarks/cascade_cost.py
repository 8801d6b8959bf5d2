"""Training step time, peak memory and inference real-time factor of SE, ASR, NLU and the cascade.

    python benchmarks/cascade_cost.py [--threads 2] [--repeats 5] [--device auto]
                                      [--utterances 16] [--out benchmarks/results/cascade_cost.json]

Models (fresh, as the pipelines build them before training): SE = MaskEnhancer(SEConfig()),
ASR = ConformerCTC(ASRConfig()) (d=144, 4 Conformer layers), NLU = build_nlu(labels from the
label set) on the pre-trained MiniLM (text mode: the reference words through its tokenizer), and
Cascade(se, asr, nlu, labels) trained with cascade_loss (NLU + 0.5 CTC + 0.5 SE).
``--cascade DIR`` loads a saved cascade (save_cascade) instead, so that the word count the ASR
hands to the NLU is a trained model's. With a fresh ASR it is whatever its greedy path gives;
the result records it (``words_per_utt``).

Data: a real speech corpus synthesized from the first --utterances SLURP sample records
(flite slt, noise mixed as build_corpus does). Training batch: the 8 utterances closest to
2.5 s (padded to the longest); the NLU batch is the same 8 records' reference text.

Train step = zero_grad + forward + loss + backward + AdamW step (lr 1e-4, fp32), timed with
a device synchronise, median of --repeats steps after 2 warm-up steps, in two settings:

- ``full``: every parameter trainable;
- ``frozen``: the backbone frozen, only the heads train (see TRAINABLE_WHEN_FROZEN: SE's mask
  projection, ASR's CTC projection, NLU's scenario/action/tag heads, and for the cascade the
  bridge + NLU heads; the cascade's backward still runs through MiniLM to reach the bridge,
  but not through ASR and SE).

Memory: each (module, setting) runs in a fresh subprocess. CPU: VmRSS / VmHWM from
/proc/self/status; the high-water mark is reset (/proc/self/clear_refs) once the model,
optimizer and batch are ready, so ``step_peak_delta_mib`` = peak RSS during the steps minus RSS
before them (activations, gradients, AdamW state, allocator slack). ``process_peak_mib`` is the
whole process (torch, transformers and weights included). CUDA: torch.cuda.max_memory_allocated
after reset_peak_memory_stats, same split.

Inference RTF = seconds of compute per second of audio: eval mode, no_grad, batch 1, over every
utterance of the corpus (noisy audio, preloaded: file I/O excluded), median of --repeats passes
after one warm-up utterance. Targets: SE, ASR (forward + greedy CTC decode), cascade e2e
(Cascade.predict mode "e2e": SE -> ASR -> bridge -> NLU -> SLURP prediction) and, for
reference, the classic cascade (mode "text": ASR 1-best text -> tokenizer -> NLU).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "components/data/sample/slurp_devel_sample.jsonl"
BATCH = 8
TARGET_SECONDS = 2.5  # the training batch: utterances closest to this duration
WARMUP = 2
LR = 1e-4
MODULES = ("se", "asr", "nlu", "cascade")
SETTINGS = ("full", "frozen")
INFER = ("se", "asr", "cascade_e2e", "cascade_text")
# parameter-name prefixes left trainable in the "frozen" setting (everything else requires_grad=False)
TRAINABLE_WHEN_FROZEN = {
    "se": ["mask."],
    "asr": ["ctc_head."],
    "nlu": ["scenario_head.", "action_head.", "tag_head."],
    "cascade": ["bridge.", "nlu.scenario_head.", "nlu.action_head.", "nlu.tag_head."],
}
MIB = 2**20


# --------------------------------------------------------------------------- memory


def _proc_status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float | None:
    kib = _proc_status_kib("VmRSS")
    if kib is None:
        try:
            import psutil

            return psutil.Process().memory_info().rss / MIB
        except ImportError:
            return None
    return kib / 1024


def hwm_mib() -> float:
    kib = _proc_status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 1024


def reset_hwm() -> bool:
    """Reset the peak-RSS mark (Linux >= 4.0); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Peak:
    """Memory before and peak during a block: CPU RSS and, on CUDA, allocated tensors."""

    def __init__(self, device) -> None:
        self.device = device

    def __enter__(self) -> "Peak":
        import torch

        gc.collect()
        self.process_peak_before = hwm_mib()
        self.rss_before = rss_mib()
        self.hwm_reset = reset_hwm()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.cuda_before = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.peak = hwm_mib()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.cuda_peak = torch.cuda.max_memory_allocated(self.device)

    def report(self) -> dict:
        out = {
            "rss_before_mib": round(self.rss_before, 1) if self.rss_before is not None else None,
            "step_peak_rss_mib": round(self.peak, 1),
            "step_peak_delta_mib": round(self.peak - self.rss_before, 1) if self.hwm_reset and self.rss_before is not None else None,
            "process_peak_mib": round(max(self.peak, self.process_peak_before), 1),
        }
        if self.device.type == "cuda":
            out |= {
                "cuda_before_mib": round(self.cuda_before / MIB, 1),
                "cuda_peak_mib": round(self.cuda_peak / MIB, 1),
                "cuda_peak_delta_mib": round((self.cuda_peak - self.cuda_before) / MIB, 1),
            }
        return out


# --------------------------------------------------------------------------- worker (one fresh process per measurement)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _dataset(manifest: Path):
    from components.data.dataset import SpeechDataset
    from components.data.manifest import read_manifest

    df = read_manifest(manifest)
    return df, SpeechDataset(df, manifest.parent)


def train_batch(manifest: Path) -> tuple[dict, list[int]]:
    from components.data.dataset import collate

    df, ds = _dataset(manifest)
    order = sorted(range(len(df)), key=lambda i: (abs(float(df["duration"].iloc[i]) - TARGET_SECONDS), i))[:BATCH]
    return collate([ds[i] for i in sorted(order)]), sorted(order)


def _build(module: str, cascade_dir: str | None):
    """(model, labels) for module; the speech models come from the saved cascade when given."""
    from components.models.asr import ASRConfig, ConformerCTC
    from components.cascade_files import load_cascade
    from components.models.cascade import Cascade
    from components.models.nlu import NluLabels, build_nlu
    from components.models.se import MaskEnhancer, SEConfig

    if cascade_dir:
        cascade = load_cascade(cascade_dir)
        return {"se": cascade.se, "asr": cascade.asr, "nlu": cascade.nlu, "cascade": cascade}[module], cascade.labels
    labels = NluLabels.from_label_set()
    if module == "se":
        return MaskEnhancer(SEConfig()), labels
    if module == "asr":
        return ConformerCTC(ASRConfig()), labels
    if module == "nlu":
        return build_nlu(labels), labels
    return Cascade(MaskEnhancer(SEConfig()), ConformerCTC(ASRConfig()), build_nlu(labels), labels), labels


def _loss_fn(module: str, model, batch: dict, manifest: Path, labels):
    """A closure computing the module's training loss on a fixed batch (already on the device)."""
    from components.models.asr import ctc_loss
    from components.models.cascade import cascade_loss
    from components.models.nlu import batch_from_records, load_tokenizer, nlu_loss
    from components.models.se import se_loss

    if module == "se":
        return lambda: se_loss(model(batch["noisy"]), batch["clean"], batch["lengths"], model)
    if module == "asr":
        return lambda: ctc_loss(model(batch["clean"], batch["lengths"]), batch["targets"], batch["target_lengths"])
    if module == "cascade":
        return lambda: cascade_loss(model, batch)[0]
    from components.data.slurp import read_slurp

    by_id = {r.slurp_id: r for r in read_slurp(SAMPLE)}
    records = [by_id[int(m["slurp_id"])] for m in batch["meta"]]
    inputs, targets = batch_from_records(load_tokenizer(), records, labels)
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in inputs.items()}
    return lambda: nlu_loss(model(**inputs), targets)


def worker_train(module: str, setting: str, args) -> dict:
    import torch

    from components.metrics.params import count_parameters
    from components.training.loop import resolve_device, to_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model, labels = _build(module, args.cascade)
    model.to(device).train()
    if setting == "frozen":
        keep = TRAINABLE_WHEN_FROZEN[module]
        for name, p in model.named_parameters():
            p.requires_grad_(any(name.startswith(k) for k in keep))
    else:
        model.requires_grad_(True)
    batch, rows = train_batch(Path(args.manifest))
    batch = to_device(batch, device)
    loss_fn = _loss_fn(module, model, batch, Path(args.manifest), labels)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LR)
    words = None
    if module == "cascade":
        with torch.no_grad():
            words = [len(w) for w in model(batch["noisy"], batch["lengths"])["words"]]

    def step() -> float:
        _sync(device)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    with Peak(device) as peak:
        for _ in range(WARMUP):
            step()
        times = [step() for _ in range(args.repeats)]
    lengths = batch["lengths"].cpu()
    counts = count_parameters(model)
    return {
        "module": module,
        "setting": setting,
        "params_total": counts["total"],
        "params_trainable": counts["trainable"],
        "trainable_fraction": round(counts["trainable"] / counts["total"], 5),
        "batch_size": len(lengths),
        "audio_s": [round(float(n) / 16_000, 3) for n in lengths] if module != "nlu" else None,
        "padded_s": round(float(lengths.max()) / 16_000, 3) if module != "nlu" else None,
        "words_per_utt": words,
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "times_s": [round(t, 4) for t in times],
        **peak.report(),
    }


def worker_infer(target: str, args) -> dict:
    import torch

    from components.data.dataset import collate
    from components.models.asr import greedy_decode
    from components.models.nlu import load_tokenizer
    from components.training.loop import resolve_device, to_device

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model, _ = _build("cascade" if target.startswith("cascade") else target, args.cascade)
    model.to(device).eval()
    _, ds = _dataset(Path(args.manifest))
    batches = [to_device(collate([ds[i]]), device) for i in range(len(ds))]
    tokenizer = load_tokenizer() if target == "cascade_text" else None

    def run(b: dict) -> None:
        if target == "se":
            model(b["noisy"])
        elif target == "asr":
            greedy_decode(model(b["noisy"], b["lengths"]), model.vocab)
        else:
            model.predict(b["noisy"], b["lengths"], b["meta"], mode=target.split("_", 1)[1], tokenizer=tokenizer)

    audio_s = sum(float(b["lengths"][0]) for b in batches) / 16_000
    passes, latencies = [], []
    with torch.no_grad(), Peak(device) as peak:
        run(batches[0])  # warm-up
        for _ in range(args.repeats):
            total = 0.0
            for b in batches:
                _sync(device)
                t0 = time.perf_counter()
                run(b)
                _sync(device)
                dt = time.perf_counter() - t0
                total += dt
                latencies.append(dt)
            passes.append(total)
    med = statistics.median(passes)
    return {
        "target": target,
        "utterances": len(batches),
        "audio_s": round(audio_s, 2),
        "median_pass_s": round(med, 4),
        "rtf": round(med / audio_s, 5),
        "rtf_all": [round(p / audio_s, 5) for p in passes],
        "median_latency_ms": round(1000 * statistics.median(latencies), 2),
        **peak.report(),
    }


# --------------------------------------------------------------------------- driver


def _spawn(job: str, args, manifest: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", job, "--manifest", str(manifest), "--threads", str(args.threads), "--repeats", str(args.repeats), "--device", args.device]
    if args.cascade:
        cmd += ["--cascade", args.cascade]
    env = os.environ | {k: str(args.threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")} | {"TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {job} failed (exit {proc.returncode}):\n{proc.stderr.strip()[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _settings(args, manifest: Path) -> dict:
    import torch

    from components.data.manifest import read_manifest
    from components.training.loop import resolve_device

    device = resolve_device(args.device)
    df = read_manifest(manifest)
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "threads": args.threads,
        "repeats": args.repeats,
        "warmup_steps": WARMUP,
        "batch_size": BATCH,
        "optimizer": f"AdamW lr {LR}",
        "precision": "fp32",
        "corpus_utterances": len(df),
        "corpus_audio_s": round(float(df["duration"].sum()), 2),
        "corpus_voice": sorted(set(df["speaker"])),
        "cascade_weights": args.cascade or "fresh (SE, ASR random init; NLU pre-trained MiniLM)",
        "trainable_when_frozen": TRAINABLE_WHEN_FROZEN,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--utterances", type=int, default=16, help="SLURP sample records to synthesize for the corpus")
    parser.add_argument("--manifest", help="use this corpus manifest instead of synthesizing one")
    parser.add_argument("--cascade", help="a saved cascade directory (save_cascade) to load weights from")
    parser.add_argument("--only", help="comma-separated subset of se,asr,nlu,cascade (train) and infer targets")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/cascade_cost.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        torch.set_num_interop_threads(1)
        kind, *rest = args.worker.split(":")
        result = worker_train(*rest, args) if kind == "train" else worker_infer(rest[0], args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    from benchmarks.machine import describe

    only = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="cascadapt-cost-") as tmp:
        if args.manifest:
            manifest = Path(args.manifest).resolve()
        else:
            from components.data.corpus import CorpusConfig, build_corpus
            from components.data.slurp import read_slurp
            from components.data.speakers import Speaker

            records = read_slurp(SAMPLE)[: args.utterances]
            manifest = build_corpus(records, Path(tmp) / "corpus", CorpusConfig([Speaker("flite", "slt")], workers=args.threads), progress=False)
        train_rows, infer_rows = [], []
        for module in MODULES:
            if only and module not in only:
                continue
            for setting in SETTINGS:
                row = _spawn(f"train:{module}:{setting}", args, manifest)
                train_rows.append(row)
                mem = row.get("cuda_peak_delta_mib", row["step_peak_delta_mib"])
                print(f"train {module:8s} {setting:6s} {row['params_trainable']:>10,d}/{row['params_total']:<10,d} params  {row['median_s']:7.3f} s/step  +{mem} MiB peak", flush=True)
        for target in INFER:
            if only and target not in only:
                continue
            row = _spawn(f"infer:{target}", args, manifest)
            infer_rows.append(row)
            print(f"infer {target:13s} RTF {row['rtf']:.4f}  ({row['median_latency_ms']:.1f} ms/utt, {row['audio_s']} s audio)", flush=True)
        result = {
            "benchmark": "cascade_cost",
            "machine": describe(),
            "settings": _settings(args, manifest),
            "train_step": train_rows,
            "inference": infer_rows,
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
