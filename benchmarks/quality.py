"""The quality table: zero-shot Whisper, the frozen and the fully fine-tuned cascade, pocketsphinx and
faster-whisper on the target test split (held-out sentences, noisy).

    python benchmarks/quality.py [--config configs/baselines.yaml] [--out benchmarks/results/quality.json]
    python benchmarks/quality.py --run RUN_NAME   # score an existing baseline run instead of running one

Runs the baseline pipeline with the config (on the newest finished cascadapt_backbones; run the
pretrain pipeline first), times it, and writes its results table with the machine description. With
a Whisper backbone it adds rows the pipeline has not:

- zero-shot Whisper: the pre-trained weights the backbone started from, 1-best text into the
  backbone's NLU (trained on gold text), no SE;
- faster-whisper (a test dependency): the same weights in CTranslate2, int8, greedy, as users run it,
  its text into the same NLU;
- the fine-tuned cascade (text mode) with and without its SE, on the noisy and on the clean audio:
  whether the SE helps Whisper.

Rates are fractions; wer_<engine> is the WER on one TTS engine's voices; rtf is processing seconds
per second of audio on this machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def faster_whisper_transcriber(source: str, threads: int = 2):
    """waves -> SLURP-style texts with faster-whisper (int8, beam 1, no timestamps) on ``source``'s CTranslate2 files."""
    from faster_whisper import WhisperModel

    from components.models.whisper.load import whisper_files
    from components.models.whisper.text import slurp_style

    files = whisper_files(source)
    if files.format != "ct2" or len(files.weights) != 1:
        raise SystemExit(f"faster-whisper needs one CTranslate2 model.bin; {source} has {files.format} {files.weights}")
    model = WhisperModel(str(files.weights[0].parent), device="cpu", compute_type="int8", cpu_threads=threads)

    def transcribe(waves):
        texts = []
        for wave in waves:
            segments, _ = model.transcribe(wave, language="en", beam_size=1, without_timestamps=True, condition_on_previous_text=False)
            texts.append(slurp_style(" ".join(s.text for s in segments)))
        return texts

    return transcribe


def extra_rows(run, threads: int) -> list[dict]:
    """Zero-shot Whisper, faster-whisper, and the SE on/off rows for a baseline run with a Whisper backbone."""
    from components.data.dataset import SpeechDataset
    from components.models.cascade import Cascade
    from components.models.whisper.model import WhisperASR
    from components.training.recipes import evaluate_cascade, evaluate_external_asr

    backbone = run.steps["evaluate_frozen"].inputs["cascade"][0].load()
    if backbone.asr.kind != "whisper":
        return []
    tuned = run.steps["evaluate_full"].inputs["cascade"][0].load()
    test = run.steps["evaluate_frozen"].inputs["test"][0].load()  # the split the backbone can hear (fit_to_backbone)
    root = Path(run.steps["ingest"].outputs["manifest_path"][0].load()).parent
    noisy = SpeechDataset(test, root)
    clean = SpeechDataset(test.assign(noisy_path=test["clean_path"]), root)
    source = backbone.asr.config.source
    rows = []

    def add(system, mode, metrics, trainable, **extra):
        rows.append({"system": system, "mode": mode, **metrics, "trainable_parameters": trainable, **extra})
        print(f"{system} {mode} {extra}: wer {metrics['wer']:.3f} intent {metrics['intent_acc']:.3f} slu_f1 {metrics['slu_f1']:.3f} rtf {metrics['rtf']:.3f}", flush=True)

    asr = WhisperASR.pretrained(source, context_seconds=backbone.asr.config.context_seconds)
    zero_shot = Cascade(None, asr, backbone.nlu, backbone.labels)
    add("zero_shot_whisper", "text", evaluate_cascade(zero_shot, noisy, mode="text")[0], 0)
    add("faster_whisper", "text", evaluate_external_asr(faster_whisper_transcriber(source, threads), backbone, noisy)[0], 0)
    no_se = Cascade(None, tuned.asr, tuned.nlu, tuned.labels, bridge_input=tuned.bridge_input)
    for audio, ds in (("noisy", noisy), ("clean", clean)):
        add("full_finetuning", "text", evaluate_cascade(tuned, ds, mode="text")[0], None, audio=audio, se=True)
        add("full_finetuning", "text", evaluate_cascade(no_se, ds, mode="text")[0], None, audio=audio, se=False)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs/baselines.yaml"))
    parser.add_argument("--run", help="an existing baseline_pipeline run to score (no new run)")
    parser.add_argument("--threads", type=int, default=2, help="faster-whisper's CPU threads")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/quality.json"))
    args = parser.parse_args()

    from zenml.client import Client

    from pipelines.baseline_pipeline import baseline_pipeline

    seconds = None
    if args.run:
        run = Client().get_pipeline_run(args.run)
    else:
        t0 = time.perf_counter()
        run = baseline_pipeline.with_options(config_path=args.config)()
        seconds = round(time.perf_counter() - t0, 1)
        run = Client().get_pipeline_run(run.id)
    table = run.steps["results_table"].outputs["results"][0].load()
    backbone = run.steps["evaluate_frozen"].inputs["cascade"][0]
    extra = extra_rows(run, args.threads)
    result = {
        "benchmark": "quality",
        "machine": describe(),
        "config": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_relative_to(REPO) else args.config,
        "pipeline_seconds": seconds,
        "backbone_artifact": {"name": backbone.name, "version": str(backbone.version), "id": str(backbone.id)},
        "run": run.name,
        "results": table.to_dict("records"),
        "extra_rows": extra,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table.to_string(index=False))
    print(f"pipeline: {seconds} s; wrote {args.out}")


if __name__ == "__main__":
    main()
