"""Cost and quality of the architecture search: supernet steps against a full fine-tuning step,
search + two-stage time against one full fine-tuning run, and the systems' results table.

    python benchmarks/nas.py [--threads 2] [--repeats 10] [--manifest data/target/manifest.jsonl]
                             [--out benchmarks/results/nas.json]

Needs a finished nas_pipeline run (configs/nas.yaml) in the local ZenML store (and, when its full
fine-tuning came from a cache, the run that trained it).

Steps (in this process, on the newest cascadapt_backbones, batch: the 8 target utterances
closest to 2.5 s): ``full`` = cascade_loss + backward + AdamW over every parameter;
``supernet_weight`` = NFA cells (per block as in the run), one hard Gumbel sample (seeded per round, the same for every
variant's round), AdamW over the candidates and the bridge; ``supernet_arch`` = the same
sample with gradients to the logits, loss + penalty, Adam on the logits; ``supernet_soft`` =
every candidate runs (DARTS). Round-robin medians over --repeats rounds; memory = what autograd
saves for backward + gradients and AdamW state (benchmarks/memory.py).

Pipeline: for each search and training step of the newest nas_pipeline run, its duration in the
newest run where it really ran (not cached, not resumed), against the same for finetune_full; per
lambda of the sweep, search + stage 2 seconds. Targets, on the NFA point the run selected:
two-stage at <= 10 % of full fine-tuning's trainable parameters and an error at most 1 point
(absolute) above it; search + stage 2 at most 2 x one full fine-tuning run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
ERRORS = ("wer", "cer", "nlu_cer")
ACCURACIES = ("intent_acc", "slu_f1")


def step_costs(manifest: Path, repeats: int, blocks: list[str], modules: list[str]) -> dict:
    import torch

    from benchmarks.cascade_cost import train_batch
    from benchmarks.memory import adamw_state_mib, saved_for_backward_mib
    from components.models.cascade import cascade_loss
    from components.nas import Architecture, attach_cells, glue_parameters
    from components.nas.search import no_weight_gradients
    from steps.backbones import backbone_artifact

    backbone = backbone_artifact("latest").load().train()
    batch, _ = train_batch(manifest)
    full = copy.deepcopy(backbone)
    supernet = copy.deepcopy(backbone)
    arch = Architecture(attach_cells(supernet, "NFA", modules=modules, blocks=blocks))
    weights = arch.candidate_parameters() + glue_parameters(supernet)
    for p in supernet.parameters():
        p.requires_grad_(False)
    for p in weights:
        p.requires_grad_(True)
    opts = {"full": torch.optim.AdamW(full.parameters(), lr=1e-4), "weights": torch.optim.AdamW(weights, lr=1e-4), "arch": torch.optim.Adam([arch.alpha], lr=3e-3)}
    loss = lambda model: cascade_loss(model, batch)[0]  # noqa: E731

    def run(name: str, seed: int) -> float:
        t0 = time.perf_counter()
        if name == "full":
            opts["full"].zero_grad(set_to_none=True)
            loss(full).backward()
            opts["full"].step()
        elif name in ("supernet_weight", "supernet_soft"):
            torch.manual_seed(seed)
            with torch.no_grad():
                arch.sample(tau=1.0, hard=name == "supernet_weight")
            opts["weights"].zero_grad(set_to_none=True)
            out = loss(supernet)
            if out.requires_grad:
                out.backward()
                opts["weights"].step()
        else:  # as the search runs it: gradients to the logits only
            torch.manual_seed(seed)
            opts["arch"].zero_grad(set_to_none=True)
            arch.sample(tau=1.0, hard=True)
            with no_weight_gradients(weights):
                (loss(supernet) + arch.penalty(1.0)).backward()
            opts["arch"].step()
        return time.perf_counter() - t0

    names = ["full", "supernet_weight", "supernet_arch", "supernet_soft"]
    times = {n: [] for n in names}
    rng = random.Random(0)
    for r in range(2 + repeats):
        for n in rng.sample(names, len(names)):
            seconds = run(n, seed=r)
            if r >= 2:
                times[n].append(seconds)
    medians = {n: statistics.median(t) for n, t in times.items()}
    torch.manual_seed(0)
    with torch.no_grad():
        arch.sample(tau=1.0, hard=False)
    memory = {
        "full": {"activation_mib": saved_for_backward_mib(full, lambda: loss(full)), "optimizer_mib": adamw_state_mib(list(full.parameters()))},
        "supernet_soft": {"activation_mib": saved_for_backward_mib(supernet, lambda: loss(supernet)), "optimizer_mib": adamw_state_mib(weights)},
    }
    return {n: {"step_s": medians[n], "vs_full": medians[n] / medians["full"], **memory.get(n, {})} for n in names}


def fresh_seconds(client, step_name: str, pipelines: tuple[str, ...]) -> float | None:
    """Duration of ``step_name`` in the newest run where it really ran: not cached, and not resumed
    from a checkpoint (metadata ``*resumed_from`` = -1; runs from before that key: longer than a minute)."""
    for pipeline in pipelines:
        for run in client.list_pipeline_runs(pipeline_name=pipeline, sort_by="desc:created", size=20).items:
            step = run.steps.get(step_name)
            if not step or step.status != "completed" or not (step.start_time and step.end_time):
                continue
            seconds = (step.end_time - step.start_time).total_seconds()
            resumed = [v for k, v in step.run_metadata.items() if k.endswith("resumed_from")]
            if (resumed and all(v == -1 for v in resumed)) or (not resumed and seconds > 60):
                return seconds
    return None


def pipeline_costs() -> dict:
    from zenml.client import Client

    from components.nas.cascade import SEARCHED_MODULES

    client = Client()
    nas = client.list_pipeline_runs(pipeline_name="nas_pipeline", sort_by="desc:created", size=1).items[0]
    seconds = {name: fresh_seconds(client, name, ("nas_pipeline",)) for name in nas.steps if name.startswith(("search_", "train_"))}
    full = fresh_seconds(client, "finetune_full", ("nas_pipeline", "baseline_pipeline"))
    outputs = nas.steps["nas_results_table"].outputs
    table = outputs["nas_results"][0].load().to_dict("records")
    selected = outputs["nas_architecture"][0].load()
    sweep = {}
    for name in seconds:
        if name.startswith("search_nfa_"):
            point = name.removeprefix("search_nfa_")
            architecture = nas.steps[name].outputs["architecture"][0].load()
            cost = (seconds[name] or 0) + (seconds.get(f"train_nfa_{point}") or 0)
            sweep[point] = {"lambda": architecture["lambda"], "architecture": architecture["architecture"], "trainable_fraction": architecture["trainable_fraction"],
                            "search_plus_stage2_seconds": cost, "cost_vs_full": cost / full if full else None}
    point = f"lam{selected['lambda']:g}".replace(".", "_")
    return {"run": nas.name, "step_seconds": seconds, "full_finetuning_seconds": full, "selected": selected["system"], "blocks": selected.get("blocks", []),
            "modules": selected.get("modules", list(SEARCHED_MODULES)),
            "nfa_search_plus_stage2_seconds": sweep[point]["search_plus_stage2_seconds"], "nfa_cost_vs_full": sweep[point]["cost_vs_full"],
            "results": table, "sweep": sweep, "nfa_architecture": selected["architecture"], "nfa_probabilities": selected["probabilities"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--manifest", default=str(REPO / "data/target/manifest.jsonl"))
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/nas.json"))
    parser.add_argument("--steps-only", action="store_true", help="only the step costs (no nas_pipeline run needed), on the search space of --blocks and --modules")
    parser.add_argument("--blocks", nargs="*", default=["asr", "nlu"])
    parser.add_argument("--modules", nargs="+", default=["se", "asr", "bridge", "nlu"])  # configs/nas.yaml's space
    args = parser.parse_args()
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    import torch

    from benchmarks.machine import describe, git_commit

    torch.set_num_threads(args.threads)
    if args.steps_only:
        space = {"blocks": args.blocks, "modules": args.modules}
        result = {"machine": describe(), "commit": git_commit(), "threads": args.threads, "repeats": args.repeats, "config": space,
                  "steps": step_costs(Path(args.manifest), args.repeats, args.blocks, args.modules)}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2, default=str))
        print(json.dumps(result["steps"], indent=1), f"\nwrote {args.out}")
        return
    pipeline = pipeline_costs()
    rows = {r["system"]: r for r in pipeline["results"]}
    full, nfa = rows["full_finetuning"], rows[pipeline["selected"]]
    targets = {
        "nfa_trainable_pct": nfa["trainable_pct"],
        "nfa_trainable_le_10pct": nfa["trainable_pct"] <= 10,
        "nfa_minus_full_points": {k: 100 * (nfa[k] - full[k]) for k in ERRORS} | {k: 100 * (full[k] - nfa[k]) for k in ACCURACIES},
        "nfa_within_1_point_nlu_cer": 100 * (nfa["nlu_cer"] - full["nlu_cer"]) <= 1,
        "nfa_cost_le_2x_full": pipeline["nfa_cost_vs_full"] is not None and pipeline["nfa_cost_vs_full"] <= 2,
    }
    result = {"machine": describe(), "commit": git_commit(), "threads": args.threads, "pipeline": pipeline, "targets": targets,
              "steps": step_costs(Path(args.manifest), args.repeats, pipeline["blocks"], pipeline["modules"])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"steps": result["steps"], "targets": targets, "nfa_cost_vs_full": pipeline["nfa_cost_vs_full"]}, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
