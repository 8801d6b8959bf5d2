"""Whisper tiny.en zero-shot on held-out SLURP test-split sentences by the unseen `target` voices:
WER and cost at the reference 30 s window, at a 10 s window, and padded only to each clip's length.

    python benchmarks/whisper_context.py [--n 60] [--out benchmarks/results/whisper_context.json]

Clean and noisy (SNR 0-20 dB, white/pink/babble) copies of each utterance; batch 1 greedy decoding on
2 threads (medians per clip); WER after plain lower-casing and punctuation stripping and after
transformers' English normaliser on both sides; also a full fine-tuning step (batch 8, AdamW) per window.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe  # noqa: E402
from components.data.corpus import CorpusConfig, build_corpus  # noqa: E402
from components.data.manifest import read_manifest  # noqa: E402
from components.data.slurp import read_records  # noqa: E402
from components.data.speakers import PRESETS  # noqa: E402
from components.data.splits import split_of  # noqa: E402
from components.metrics.asr import wer  # noqa: E402
from components.models.whisper.model import WhisperASR  # noqa: E402
from components.models.whisper.text import english_normalized, plain_normalized  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEVEL = REPO.parent / "shared/data/slurp/devel.jsonl"
SAMPLE = REPO / "components/data/sample/slurp_devel_sample.jsonl"
WINDOWS = [("30 s", 30.0, "context"), ("10 s", 10.0, "context"), ("own length", 10.0, "longest")]


def family(engine: str) -> str:
    return {"espeak-ng": "espeak-ng", "festival": "festival", "flite": "flite"}.get(engine, engine)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=60, help="held-out sentences (each spoken once, by a target voice)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/whisper_context.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    source = DEVEL if DEVEL.is_file() else SAMPLE
    records = [r for r in read_records(source) if split_of(r.slurp_id) == "test"][: args.n]
    asr = WhisperASR.pretrained().eval()
    results: dict = {"machine": describe(), "source": str(source), "n_utterances": len(records), "model": asr.config.source, "windows": {}}
    with tempfile.TemporaryDirectory(prefix="whisper-context-") as tmp:
        cfg = CorpusConfig(list(PRESETS["target"]), snrs=[0.0, 5.0, 10.0, 20.0], noise_kinds=["white", "pink", "babble"], workers=2)
        manifest = build_corpus(records, tmp, cfg, progress=True)
        df = read_manifest(manifest)
        clips = {kind: [torch.from_numpy(sf.read(Path(tmp) / p, dtype="float32")[0]) for p in df[f"{kind}_path"]] for kind in ("clean", "noisy")}
        refs = list(df["text"])
        families = [family(e) for e in df["engine"]]
        for label, seconds, pad in WINDOWS:
            asr.config.context_seconds, asr.config.pad_to = seconds, pad
            row: dict = {"context_seconds": seconds, "pad_to": pad}
            for kind, waves in clips.items():
                hyps, times = [], []
                for w in waves:
                    start = time.perf_counter()
                    with torch.no_grad():
                        hyps.append(asr(w[None], torch.tensor([w.numel()]))["texts"][0])
                    times.append(time.perf_counter() - start)
                row[kind] = {
                    "wer_plain": wer([plain_normalized(r) for r in refs], [plain_normalized(h) for h in hyps], normalise=False),
                    "wer_english_normalizer": wer([english_normalized(r) for r in refs], [english_normalized(h) for h in hyps], normalise=False),
                    "wer_plain_by_family": {f: wer([plain_normalized(r) for r, g in zip(refs, families) if g == f], [plain_normalized(h) for h, g in zip(hyps, families) if g == f], normalise=False) for f in sorted(set(families))},
                    "decode_s_per_clip_median": statistics.median(times),
                    "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps))[:5]],
                }
                print(label, kind, json.dumps({k: v for k, v in row[kind].items() if k != "examples"}), flush=True)
            row["finetune_step_s_batch8"] = finetune_step_seconds(asr, clips["noisy"][:8], refs[:8])
            print(label, "step", row["finetune_step_s_batch8"], flush=True)
            results["windows"][label] = row
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print("wrote", args.out)


def finetune_step_seconds(asr: WhisperASR, waves: list[torch.Tensor], texts: list[str], repeats: int = 3) -> float:
    """Median seconds of forward + backward + AdamW on a copy (the benchmarked weights stay as loaded)."""
    import copy

    model = copy.deepcopy(asr).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    wave = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    lengths = torch.tensor([w.numel() for w in waves])
    targets, target_lengths = model.encode_targets(texts)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        loss = model.loss(model(wave, lengths, targets, target_lengths, words=False), targets, target_lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


if __name__ == "__main__":
    main()
