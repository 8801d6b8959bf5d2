"""The plain-torch Whisper (components/models/whisper/lean.py) against transformers' on the same tiny.en
weights, in one process: import time, the encoder, and greedy decoding.

    .venv/bin/python benchmarks/lean_whisper.py [--clips 16] [--rounds 7] [--threads 2]
        [--corpus data/target] [--out benchmarks/results/lean_whisper.json]

Clips: the --clips test-split rows at SNR 20 of data/target/manifest.jsonl (benchmarks/transcribe.py's
held-out commands), loaded once. Both models decode them with greedy_decode (the same loop, guards
and int8 vocabulary shortlist), batch of all the clips and one clip alone, at the 10 s window; the
tokens must be the same. Round-robin medians over --rounds rounds (the two models alternate inside a
round, so a noisy minute hits both). Import: a fresh process importing the lean module (torch with
it) against one importing transformers' WhisperForConditionalGeneration the way load.py does, medians
of 3 each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe, git_commit  # noqa: E402
from benchmarks.transcribe import DEFAULT_CORPUS, held_out_rows  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMPORTS = {
    "torch": "import torch",
    "lean": "import components.models.whisper.lean",
    "transformers_whisper": "from components.models.whisper.load import whisper_class; whisper_class()",
}


def import_seconds(statement: str, threads: int) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    env = {"PATH": str(Path(sys.executable).parent), "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO)}
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO).stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help="the target corpus folder (its manifest.jsonl)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/lean_whisper.json"))
    args = parser.parse_args()

    import soundfile as sf
    import torch
    from torch.nn.utils.rnn import pad_sequence

    from components.models.whisper.decode import greedy_decode
    from components.models.whisper.model import WhisperASR
    from components.models.whisper.vocabulary import GreedyVocabulary

    torch.set_num_threads(args.threads)
    imports = {name: statistics.median(import_seconds(stmt, args.threads) for _ in range(3)) for name, stmt in IMPORTS.items()}
    print("import seconds", imports, flush=True)

    asr = WhisperASR.pretrained(context_seconds=10.0).eval()
    lean = WhisperASR.pretrained(context_seconds=10.0, engine="lean").whisper  # the same weights, from the same file
    waves = [torch.from_numpy(sf.read(r["audio"], dtype="float32")[0]) for r in held_out_rows(Path(args.corpus).resolve(), args.clips)]
    batches = {"batch": waves, "one": waves[:1]}
    encoders = {"transformers": asr.encode_features, "lean": lean.encoder}
    decoders = {"transformers": asr.whisper, "lean": lean}
    # one int8 shortlist each, from the first step: a shared one would be remade at every switch of model
    vocabularies = {model: GreedyVocabulary(int8_after=0) for model in decoders}
    times: dict[str, list[float]] = {}
    tokens: dict[str, list] = {}
    with torch.inference_mode():
        inputs = {}
        for name, clips in batches.items():
            lengths = torch.tensor([len(w) for w in clips])
            inputs[name] = (asr.log_mel(pad_sequence(clips, batch_first=True), asr.frames(lengths)), asr.max_new_tokens(lengths))
        for round_ in range(args.rounds + 1):  # round 0 warms up (first calls, the int8 shortlist)
            for name, (features, max_new) in inputs.items():
                for model in (("transformers", "lean") if round_ % 2 else ("lean", "transformers")):
                    t0 = time.perf_counter()
                    states = encoders[model](features)
                    t1 = time.perf_counter()
                    out, _ = greedy_decode(decoders[model], states, asr.tokens, max_new, asr.config.max_repeats, vocabularies[model])
                    t2 = time.perf_counter()
                    if round_:
                        times.setdefault(f"{name}/{model}/encoder", []).append(t1 - t0)
                        times.setdefault(f"{name}/{model}/decode", []).append(t2 - t1)
                    tokens[f"{name}/{model}"] = out
            print(f"round {round_}/{args.rounds}", flush=True)
    same = {name: tokens[f"{name}/lean"] == tokens[f"{name}/transformers"] for name in batches}
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = {f"{name}/{part}": medians[f"{name}/transformers/{part}"] / medians[f"{name}/lean/{part}"] for name in batches for part in ("encoder", "decode")}
    steps = {name: sum(len(t) + 1 for t in tokens[f"{name}/lean"]) for name in batches}  # tokens + end of text, all rows
    result = {
        "benchmark": "lean_whisper", "machine": describe(), "commit": git_commit(),
        "config": {"clips": args.clips, "rounds": args.rounds, "threads": args.threads, "context_seconds": 10.0, "model": "whisper-tiny.en", "batch": len(waves)},
        "import_seconds": imports, "seconds": medians, "transformers_over_lean": ratios, "same_tokens": same, "decoded_tokens": steps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("import_seconds", "seconds", "transformers_over_lean", "same_tokens")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
