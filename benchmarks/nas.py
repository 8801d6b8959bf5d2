"""Cost and quality of the architecture search: supernet steps against a full fine-tuning step,
search + two-stage time against one full fine-tuning run, and the systems' results table.

    python benchmarks/nas.py [--threads 2] [--repeats 10] [--manifest data/target/manifest.jsonl]
                             [--skip-steps] [--config configs/nas.yaml] [--out benchmarks/results/nas.json]
    python benchmarks/nas.py --skip-steps --config configs/nas_lora.yaml --out benchmarks/results/nas_lora.json

Needs a finished nas_pipeline run of --config (default configs/nas.yaml) in the local ZenML store (and, when its full
fine-tuning came from a cache, the run that trained it).

Steps (in this process, on the newest cascadapt_backbones, batch: the 8 target utterances
closest to 2.5 s): ``full`` = cascade_loss + backward + AdamW over every parameter;
``supernet_weight`` = NFA cells (per block as in the run), one hard Gumbel sample (seeded per round, the same for every
variant's round), AdamW over the candidates and the bridge; ``supernet_arch`` = the same
sample with gradients to the logits, loss + penalty, Adam on the logits; ``supernet_soft`` =
every candidate runs (DARTS). Round-robin medians over --repeats rounds; memory = what autograd
saves for backward + gradients and AdamW state (benchmarks/memory.py).

Pipeline: ``systems``, one record a row of the run's results table (system, mode, lambda, trainable %,
WER, CER, intent accuracy, SLU-F1, NLU CER, ``minutes`` of the search and training steps that made it,
``eval_minutes``, ``architecture``: cell -> choice); each search and training step's duration in the
newest run where it really ran (not cached, not resumed), against the same for finetune_full; per lambda
of the sweep, search + stage 2 seconds. Targets (issue 27), on the NFA point the run selected, in the mode it
serves in (the run's ``serve_mode``): two-stage
at <= 8.7 % of full fine-tuning's trainable parameters, NLU CER within 0.4 points and intent accuracy
within 1 point of it; different choices for different Whisper blocks; search + stage 2 at most 1.5 x one
full fine-tuning run; e2e intent accuracy >= text after full fine-tuning; the run within 90 minutes.
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


def fresh_seconds(runs, step_name: str) -> float | None:
    """Duration of ``step_name`` in the newest of ``runs`` where it really ran: not cached, and not resumed
    from a checkpoint (metadata ``*resumed_from`` = -1; runs from before that key: longer than a minute)."""
    for run in runs:
        step = run.steps.get(step_name)
        if not step or step.status != "completed" or not (step.start_time and step.end_time):
            continue
        seconds = (step.end_time - step.start_time).total_seconds()
        resumed = [v for k, v in step.run_metadata.items() if k.endswith("resumed_from")]
        if (resumed and all(v == -1 for v in resumed)) or (not resumed and seconds > 60):
            return seconds
    return None


def sweep_point(system: str) -> str:
    """An NFA row's point of the sweep as the pipeline's step ids spell it: "NFA_two_stage_lam0.3" -> "lam0_3"."""
    return "lam" + system.partition("_lam")[2].replace(".", "_")


def system_steps(system: str, mode: str) -> tuple[list[str], list[str]]:
    """The steps that make a system (search and training: its cost) and that score it in ``mode``."""
    if system == "frozen":
        return [], ["evaluate_frozen"]
    if system == "full_finetuning":
        return ["finetune_full"], ["evaluate_full" if mode == "e2e" else "evaluate_full_text"]
    if system == "full_plugging":
        return ["train_plugging"], ["evaluate_plugging"]
    if system == "NA":
        return ["search_na", "train_na"], ["evaluate_na"]
    point = sweep_point(system)
    if system.startswith("NFA_one_stage"):
        return [f"search_nfa_{point}"], [f"evaluate_nfa_one_stage_{point}"]
    return [f"search_nfa_{point}", f"train_nfa_{point}"], [f"evaluate_nfa_two_stage{'_text' if mode == 'text' else ''}_{point}"]


def run_seconds(run, name: str) -> float | None:
    step = run.steps.get(name)
    if not step or not (step.start_time and step.end_time):
        return None
    return (step.end_time - step.start_time).total_seconds()


def pipeline_costs(config: str) -> dict:
    from zenml.client import Client

    from benchmarks.runs import finished_runs, newest_finished_run
    from components.nas.cascade import SEARCHED_MODULES

    nas = newest_finished_run("nas_pipeline", config)
    # a search or training resumed from a finished checkpoint costs what it cost in the run that made it: one of
    # this config, else (a step the config's edit left alone, e.g. plugging after a search setting changed) any
    # nas_pipeline run; full fine-tuning is shared with baseline_pipeline (configs/baselines.yaml)
    def newest(pipelines: tuple[str, ...]) -> list:
        runs = [r for p in pipelines for r in Client().list_pipeline_runs(pipeline_name=p, sort_by="desc:created", size=20).items]
        return sorted(runs, key=lambda r: r.created, reverse=True)

    own, others = finished_runs("nas_pipeline", config), newest(("nas_pipeline",))
    seconds = {name: fresh_seconds(own, name) or fresh_seconds(others, name) for name in nas.steps if name.startswith(("search_", "train_"))}
    full = fresh_seconds(newest(("nas_pipeline", "baseline_pipeline")), "finetune_full")
    outputs = nas.steps["nas_results_table"].outputs
    table = outputs["nas_results"][0].load().to_dict("records")
    selected = outputs["nas_architecture"][0].load()
    architectures = {"full_plugging": nas.steps["fixed_architecture"].outputs["architecture"][0].load()["architecture"],
                     "NA": nas.steps["search_na"].outputs["architecture"][0].load()["architecture"]}
    sweep = {}
    for name in seconds:
        if name.startswith("search_nfa_"):
            point = name.removeprefix("search_nfa_")
            architecture = nas.steps[name].outputs["architecture"][0].load()
            cost = (seconds[name] or 0) + (seconds.get(f"train_nfa_{point}") or 0)
            sweep[point] = {"lambda": architecture["lambda"], "architecture": architecture["architecture"], "trainable_fraction": architecture["trainable_fraction"],
                            "probabilities": architecture["probabilities"], "search_plus_stage2_seconds": cost, "cost_vs_full": cost / full if full else None}
    cells = list(architectures["NA"])
    made_in = {**seconds, "finetune_full": full}  # the seconds of every step that makes a system
    systems = []
    for row in table:
        system, mode = row["system"], row["mode"]
        trained, scored = system_steps(system, mode)
        if system == "frozen":
            architecture = dict.fromkeys(cells, "frozen")
        elif system == "full_finetuning":
            architecture = dict.fromkeys(cells, "finetune")
        elif system.startswith("NFA_"):
            architecture = sweep[sweep_point(system)]["architecture"]
        else:
            architecture = architectures[system]
        train_s = sum(made_in.get(n) or 0 for n in trained)
        lam = row["lambda"]
        systems.append({
            "system": system, "mode": mode, "lambda": lam if lam == lam else None,  # NaN (no lambda) -> None
            "trainable_pct": row["trainable_pct"], **{k: row[k] for k in ("wer", "cer", "intent_acc", "slu_f1", "nlu_cer", "trainable_parameters")},
            "minutes": train_s / 60, "eval_minutes": sum(run_seconds(nas, n) or 0 for n in scored) / 60, "architecture": architecture,
        })
    point = sweep_point(selected["system"])
    minutes = (nas.end_time - nas.start_time).total_seconds() / 60 if nas.end_time and nas.start_time else None
    return {"run": nas.name, "run_minutes": minutes, "config": nas.config.parameters if nas.config else None, "step_seconds": seconds,
            "full_finetuning_seconds": full, "selected": selected["system"], "serve_mode": selected.get("mode", "e2e"), "blocks": selected.get("blocks", []),
            "modules": selected.get("modules", list(SEARCHED_MODULES)),
            "nfa_search_plus_stage2_seconds": sweep[point]["search_plus_stage2_seconds"], "nfa_cost_vs_full": sweep[point]["cost_vs_full"],
            "systems": systems, "sweep": sweep, "nfa_architecture": selected["architecture"], "nfa_probabilities": selected["probabilities"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--manifest", default=str(REPO / "data/target/manifest.jsonl"))
    parser.add_argument("--config", default="configs/nas.yaml", help="the pipeline config whose newest finished run to read")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/nas.json"))
    parser.add_argument("--steps-only", action="store_true", help="only the step costs (no nas_pipeline run needed), on the search space of --blocks and --modules")
    parser.add_argument("--skip-steps", action="store_true", help="the pipeline run's figures only, without timing supernet steps")
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
    pipeline = pipeline_costs(args.config)
    rows = {(r["system"], r["mode"]): r for r in pipeline["systems"]}
    served = pipeline["serve_mode"]  # the targets compare the selected point with full fine-tuning in the mode it serves in
    full, full_e2e, full_text, nfa = rows[("full_finetuning", served)], rows[("full_finetuning", "e2e")], rows[("full_finetuning", "text")], rows[(pipeline["selected"], served)]
    whisper_choices = {choice for cell, choice in pipeline["nfa_architecture"].items() if cell.startswith("asr.")}
    targets = {  # issue 27's, on the selected NFA two-stage point
        "serve_mode": served,
        "nfa_trainable_pct": nfa["trainable_pct"],
        "nfa_trainable_le_8_7pct": nfa["trainable_pct"] <= 8.7,
        "nfa_minus_full_points": {k: 100 * (nfa[k] - full[k]) for k in ERRORS} | {k: 100 * (full[k] - nfa[k]) for k in ACCURACIES},
        "nfa_nlu_cer_within_0_4_points": 100 * (nfa["nlu_cer"] - full["nlu_cer"]) <= 0.4,
        "nfa_intent_within_1_point": 100 * (full["intent_acc"] - nfa["intent_acc"]) <= 1,
        "nfa_whisper_block_choices": sorted(whisper_choices),
        "nfa_whisper_blocks_differ": len(whisper_choices) > 1,
        "nfa_cost_vs_full": pipeline["nfa_cost_vs_full"],
        "nfa_cost_le_1_5x_full": pipeline["nfa_cost_vs_full"] is not None and pipeline["nfa_cost_vs_full"] <= 1.5,
        "full_e2e_minus_text_intent_points": 100 * (full_e2e["intent_acc"] - full_text["intent_acc"]),
        "e2e_ge_text_after_full_finetuning": full_e2e["intent_acc"] >= full_text["intent_acc"],
        "bench_minutes": pipeline["run_minutes"],
        "bench_le_90_minutes": pipeline["run_minutes"] is not None and pipeline["run_minutes"] <= 90,
    }
    result = {"machine": describe(), "commit": git_commit(), "threads": args.threads, "config": pipeline.pop("config"), "systems": pipeline.pop("systems"),
              "targets": targets, "pipeline": pipeline}
    if not args.skip_steps:
        result["steps"] = step_costs(Path(args.manifest), args.repeats, pipeline["blocks"], pipeline["modules"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"steps": result.get("steps"), "targets": targets}, indent=1, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
