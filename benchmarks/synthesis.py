"""Synthesis throughput per engine (utterances/s on one core) and the demo corpus build time.

    python benchmarks/synthesis.py [--sentences 48] [--repeats 3] [--out benchmarks/results/synthesis.json]

Each voice speaks the same SLURP sentences with one worker; the median of
--repeats runs is reported. The demo build is `build_corpus` on the demo
config (all cores), from empty, as `zenml pipeline run` would do it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe  # noqa: E402
from components.data.corpus import CorpusConfig, build_corpus  # noqa: E402
from components.data.slurp import read_slurp  # noqa: E402
from components.data.speakers import PRESETS, Speaker  # noqa: E402
from components.data.tts import synthesize  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "components/data/sample/slurp_devel_sample.jsonl"
VOICES = [
    Speaker("festival", "cmu_us_slt_arctic_hts"),
    Speaker("festival", "kal_diphone"),
    Speaker("festival", "ked_diphone"),
    Speaker("flite", "slt"),
    Speaker("flite", "rms"),
    Speaker("flite", "awb"),
    Speaker("flite", "kal16"),
    Speaker("espeak-ng", "en-us"),
    Speaker("espeak-ng", "en-gb-scotland+f3"),
]


def per_voice(texts: list[str], repeats: int) -> list[dict]:
    results = []
    for speaker in VOICES:
        times = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as tmp:
                outs = [Path(tmp) / f"{i}.flac" for i in range(len(texts))]
                t0 = time.perf_counter()
                synthesize(speaker, texts, outs)
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        results.append({"engine": speaker.engine, "voice": speaker.voice, "utterances": len(texts), "median_s": round(med, 3), "utt_per_s_per_core": round(len(texts) / med, 1)})
        print(f"{speaker.id:45s} {len(texts) / med:7.1f} utt/s per core", flush=True)
    return results


def demo_build() -> dict:
    records = read_slurp(SAMPLE)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        build_corpus(records, Path(tmp) / "demo", CorpusConfig(list(PRESETS["demo"])), progress=False)
        seconds = time.perf_counter() - t0
    print(f"demo corpus ({len(records)} utterances): {seconds:.1f} s", flush=True)
    return {"utterances": len(records), "seconds": round(seconds, 2), "utt_per_s": round(len(records) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/synthesis.json"))
    args = parser.parse_args()
    texts = [r.sentence for r in read_slurp(SAMPLE)[: args.sentences]]
    result = {"benchmark": "synthesis", "machine": describe(), "per_voice": per_voice(texts, args.repeats), "demo_build": demo_build()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
