"""How far DPO alignment moves ARTE's teacher, for a choice of (beta, steps): the trade-off behind AlignConfig's defaults.

    python benchmarks/arte_policy.py [--rounds 4] [--seeds 5] [--out benchmarks/results/arte_policy.json]

The teacher is the shipped sample's (train-split templates, the 8 target voices, 3 noises, 4 SNRs), with
configs/arte.yaml's (and arte_conformer.yaml's) loop shape (6 candidate batches of 16 a round, the best 2 against the worst 2). Two kinds
of preferences:
  noise:  candidates ranked at random, what gains look like when the update is too short to tell batches
          apart. The policy should stay broad: "effective" is exp(entropy) per factor, the number of values
          it still effectively chooses among.
  signal: candidates ranked by how many examples of 5 fixed intents they hold. p(wanted) should rise.
Medians over --seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe  # noqa: E402
from components.arte import AlignConfig, Teacher, align, fillers_from, templates_from  # noqa: E402
from components.data.slurp import read_records  # noqa: E402
from components.data.speakers import PRESETS  # noqa: E402
from components.data.splits import split_of  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "components/data/sample/slurp_devel_sample.jsonl"
SETTINGS = [(0.1, 200), (0.1, 100), (0.5, 100), (1.0, 100)]  # (beta, steps); lr 0.05


def run(beta: float, steps: int, preference: str, rounds: int, seed: int) -> dict:
    train = [r for r in read_records(SAMPLE) if split_of(r.slurp_id) == "train"]
    teacher = Teacher(templates_from(train), fillers_from(train), [s.id for s in PRESETS["target"]], [0, 5, 10, 20], ["white", "pink", "babble"])
    wanted = set(teacher.policy.values["intent"][:5])
    generator, ranker = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(1000 + seed)
    for _ in range(rounds):
        batches = [teacher.policy.sample(16, generator) for _ in range(6)]
        if preference == "noise":
            order = torch.randperm(6, generator=ranker).tolist()
        else:
            order = sorted(range(6), key=lambda i: -sum(c["intent"] in wanted for c in batches[i]))
        align(teacher.policy, [(batches[order[k]], batches[order[-1 - k]]) for k in range(2)], AlignConfig(beta=beta, lr=0.05, steps=steps))
    p = teacher.policy.probabilities()
    return {"effective": teacher.policy.effective_choices(), "p_wanted": sum(p["intent"][i] for i in wanted), "values": {k: len(v) for k, v in teacher.policy.values.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/arte_policy.json"))
    args = parser.parse_args()
    start = time.perf_counter()
    rows = []
    for beta, steps in SETTINGS:
        for preference in ("noise", "signal"):
            runs = [run(beta, steps, preference, args.rounds, seed) for seed in range(args.seeds)]
            row = {
                "beta": beta, "steps": steps, "preferences": preference,
                "effective_median": {f: statistics.median(r["effective"][f] for r in runs) for f in runs[0]["effective"]},
                "p_wanted_median": statistics.median(r["p_wanted"] for r in runs),
                "values": runs[0]["values"],
            }
            rows.append(row)
            eff = row["effective_median"]
            print(f"beta {beta:<4g} steps {steps:<4d} {preference:6s}: effective intents {eff['intent']:.1f}/{row['values']['intent']}, "
                  f"voices {eff['voice']:.2f}/{row['values']['voice']}, p(5 wanted intents) {row['p_wanted_median']:.3f}", flush=True)
    uniform = 5 / rows[0]["values"]["intent"]
    result = {"benchmark": "arte_policy", "machine": describe(), "rounds": args.rounds, "seeds": args.seeds, "p_wanted_uniform": uniform,
              "rows": rows, "seconds": round(time.perf_counter() - start, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"uniform p(wanted) {uniform:.3f}; wrote {args.out}")


if __name__ == "__main__":
    main()
