"""The main job: the whole mission on the embedded default, one ZenML pipeline after another.

    python -m cascadapt.main_job [--stages data,pretrain,...] [--skip-smoke-test]

data (corpus, validation, DVC) -> pretrain (SE, ASR, NLU, bridge on the source voices) -> baseline
(frozen vs full fine-tuning on the target voices) -> nas (NFA search, two-stage training) -> arte
(tailored training data: the teacher aligned to the student's gains, vs random and no extra data) -> multitask
(HRA and its baselines per task, the winner promoted if it beats production) -> deployment (the
production adapters as a bento, smoke-tested on 127.0.0.1). Each stage is a pipeline run with its
configs/*demo* file, exactly what `zenml pipeline run <pipeline> -c <config>` does; the store is the
active ZenML stack's (local SQLite by default). At the end it prints the figures, where the plots
are, and the bento tag.
"""

from __future__ import annotations

import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stage:
    name: str
    pipeline: str  # module:function
    config: str  # relative to the repository


STAGES = [
    Stage("data", "pipelines.data_pipeline:data_pipeline", "configs/demo.yaml"),
    Stage("pretrain", "pipelines.pretrain_pipeline:pretrain_pipeline", "configs/pretrain_demo.yaml"),
    Stage("baseline", "pipelines.baseline_pipeline:baseline_pipeline", "configs/baselines_demo.yaml"),
    Stage("nas", "pipelines.nas_pipeline:nas_pipeline", "configs/nas_demo.yaml"),
    Stage("arte", "pipelines.arte_pipeline:arte_pipeline", "configs/arte_demo.yaml"),
    Stage("multitask", "pipelines.multitask_pipeline:multitask_pipeline", "configs/multitask_demo.yaml"),
    Stage("deployment", "pipelines.deployment_pipeline:deployment_pipeline", "configs/deploy_demo.yaml"),
]


def run_stage(stage: Stage, skip_smoke_test: bool = False):
    """One pipeline run from its config; returns ZenML's run response."""
    module, function = stage.pipeline.split(":")
    pipeline = getattr(importlib.import_module(module), function)
    options = {"config_path": str(REPO / stage.config)}
    if stage.name == "deployment" and skip_smoke_test:
        options["parameters"] = {"serve_locally": False}
    return pipeline.with_options(**options)()


def examples(steps, per_engine: int = 2) -> list[str]:
    """A few test utterances a TTS engine: what was said, what the cascade heard, the intent it chose."""
    test = steps["split_corpus"].outputs["test"][0].load().set_index("utt_id")
    predictions = [json.loads(line) for line in steps["evaluate_full_text"].outputs["predictions"][0].load().splitlines()]
    shown, lines = {}, []
    for p in predictions:
        row = test.loc[p["file"]]
        if shown.get(row["engine"], 0) < per_engine:
            shown[row["engine"]] = shown.get(row["engine"], 0) + 1
            mark = "ok" if p["scenario"] == row["scenario"] and p["action"] == row["action"] else f"gold {row['intent']}"
            lines.append(f"  [{row['engine']}, snr {row['snr']:g}] said {row['text']!r}, heard {p['transcript']!r} -> {p['scenario']}_{p['action']} ({mark})")
    return lines


def summary(runs: dict, seconds: dict) -> str:
    """What the runs produced, in words and tables: figures, plots, bento, and where to look."""
    from zenml.client import Client
    from zenml.enums import ModelStages

    client = Client()
    lines = ["", "== cascadapt main job: done", ""]
    lines += [f"{name:11s} {seconds[name] / 60:5.1f} min   run {runs[name].name}" for name in runs]
    lines.append(f"{'total':11s} {sum(seconds.values()) / 60:5.1f} min")
    lines.append("Demo sizes (configs/*_demo.yaml): the pre-trained Whisper tiny.en behind the cascade, a few training steps a")
    lines.append("stage; every figure is on held-out test sentences, noisy (SNR 0-20 dB). The README's bench figures come from")
    lines.append("configs/pretrain.yaml and baselines.yaml (benchmarks/quality.py).")

    def table(run, step: str, output: str, columns: list[str]) -> list[str]:
        df = client.get_pipeline_run(run.id).steps[step].outputs[output][0].load()
        return ["  " + line for line in df[[c for c in columns if c in df.columns]].to_string(index=False, float_format=lambda v: f"{v:.3g}").splitlines()]

    if "baseline" in runs:
        lines += ["", "Frozen backbone vs full fine-tuning on the target voices (baseline_pipeline, results):"]
        lines += table(runs["baseline"], "results_table", "results", ["system", "mode", "wer", "wer_espeak-ng", "wer_festival", "wer_flite", "intent_acc", "slu_f1", "trainable_parameters", "rtf"])
        lines += ["", "Transcripts of held-out test sentences by the fully fine-tuned cascade (text mode):"]
        lines += examples(client.get_pipeline_run(runs["baseline"].id).steps)
    if "nas" in runs:
        lines += ["", "Architecture search (nas_pipeline, nas_results):"]
        lines += table(runs["nas"], "nas_results_table", "nas_results", ["system", "mode", "wer", "intent_acc", "slu_f1", "nlu_cer", "trainable_parameters"])
    if "arte" in runs:
        lines += ["", "Tailored training data (arte_pipeline, arte_results):"]
        lines += table(runs["arte"], "arte_results", "arte_results", ["system", "seed", "generated", "intent_acc", "slu_f1", "wer"])
    if "multitask" in runs:
        lines += ["", "Multi-task adaptation, task-averaged (multitask_pipeline, multitask_results):"]
        lines += table(runs["multitask"], "multitask_results", "multitask_results", ["system", "wer", "cer", "per_task_params", "shared_params"])
        promotion = client.get_pipeline_run(runs["multitask"].id).steps["promote_adapters"].outputs["promotion"][0].load()
        lines.append(f"  promotion: {'promoted' if promotion['promoted'] else 'not promoted'} {promotion['candidate']} ({promotion['reason']})")
    if "deployment" in runs:
        serving = client.get_model_version("cascadapt_multitask", ModelStages.PRODUCTION).run_metadata.get("serving", {})
        lines += ["", f"Bento: {serving.get('bento_tag')}  (bentoml serve {serving.get('bento_tag')} --port 3000)"]
        if serving.get("smoke_test"):
            smoke = serving["smoke_test"]
            example = smoke.get("example", {})
            lines.append(f"  smoke test on 127.0.0.1: {smoke.get('text')!r} ({smoke.get('intent')}) to {smoke.get('tasks')} tasks; e.g. {example.get('transcript')!r} -> {example.get('intent')}")
            lines.append(f"  exact transcripts {smoke.get('exact_transcripts')}/{smoke.get('tasks')} (mean WER {smoke.get('mean_wer')}), correct intents {smoke.get('correct_intents')}/{smoke.get('tasks')}")
            for name, reply in smoke.get("no_speech", {}).items():
                lines.append(f"  {name}: speech {str(reply['speech']).lower()}, intent {reply['intent']}")
    lines += [
        "",
        "Plots and reports are ZenML visualizations of these runs (training curves, Pareto front, architecture",
        "weights, the teacher's policy before and after alignment, comparison and parameters-vs-tasks plots,",
        "validation and drift reports): start the dashboard with `zenml login --local` and open the runs above,",
        "or load them with zenml.client.Client().",
        "Exported adapters: outputs/adapters; the corpus: data/demo (DVC-tracked, data.dvc).",
    ]
    return "\n".join(lines)


@click.command()
@click.option("--stages", default=",".join(s.name for s in STAGES), show_default=True, help="Comma-separated stages to run, in order.")
@click.option("--skip-smoke-test", is_flag=True, help="Build the bento but do not serve it on 127.0.0.1.")
def main(stages: str, skip_smoke_test: bool) -> None:
    """Run the whole mission on the active ZenML stack and print what it produced."""
    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    known = {s.name: s for s in STAGES}
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise click.BadParameter(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(known)}", param_hint="--stages")
    runs, seconds = {}, {}
    for i, name in enumerate(wanted, start=1):
        click.echo(f"\n== stage {i}/{len(wanted)}: {name} ({known[name].config})", err=True)
        start = time.perf_counter()
        runs[name] = run_stage(known[name], skip_smoke_test)
        seconds[name] = time.perf_counter() - start
    click.echo(summary(runs, seconds))


if __name__ == "__main__":
    main()
