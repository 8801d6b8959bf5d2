"""The `cascadapt` command line (the application layer: components, plus ZenML where a model is named by version).

`synth`, `validate`, `predict`, `transcribe`, `score` and `adapters` are a public contract: keep names and flags stable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from components.data.slurp import SlurpFormatError


def _floats(value: str, what: str) -> list[float]:
    try:
        return [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated numbers, got {value!r}") from None


@click.group()
@click.version_option(package_name="cascadapt")
def main() -> None:
    """cascadapt: parameter-efficient multi-task adaptation of speech models."""


@main.command()
@click.option("--slurp-jsonl", type=click.Path(exists=True, dir_okay=False), required=True, help="SLURP release-format jsonl (or a .txt of sentences, unlabelled, like SLURP's lm.txt).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Corpus folder (created; resumed if it exists).")
@click.option("--voices", default="demo", show_default=True, help="Comma-separated presets (demo, source, target) or engine:voice[:pitch[:rate]].")
@click.option("--snr", default="0,5,10,20", show_default=True, help="SNRs in dB; each utterance gets one, chosen by seed.")
@click.option("--noise", default="white,pink,babble", show_default=True, help="Noise kinds to draw from.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N sentences.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--speakers-per-text", type=click.IntRange(min=1), default=1, show_default=True, help="How many voices say each sentence.")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl", show_default=True, help="Manifest format.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def synth(slurp_jsonl, out, voices, snr, noise, limit, seed, speakers_per_text, workers, fmt, quiet) -> None:
    """Synthesize 16 kHz clean and noisy speech for SLURP text; write OUT/manifest.<format>."""
    from components.data.corpus import CorpusConfig, build_corpus
    from components.data.slurp import read_records
    from components.data.speakers import parse_voices

    try:
        records = read_records(slurp_jsonl)[:limit]
        cfg = CorpusConfig(
            speakers=parse_voices(voices),
            snrs=_floats(snr, "--snr"),
            noise_kinds=[n.strip() for n in noise.split(",") if n.strip()],
            speakers_per_text=speakers_per_text,
            seed=seed,
            workers=workers,
            manifest_format=fmt,
        )
        manifest = build_corpus(records, out, cfg, progress=not quiet)
    except (SlurpFormatError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {manifest}")


@main.command()
@click.option("--manifest", type=click.Path(dir_okay=False), required=True, help="manifest.jsonl, .csv or .parquet")
@click.option("--labels", type=click.Path(exists=True, dir_okay=False), default=None, help="Label set: labels.json or a SLURP jsonl (default: the shipped SLURP labels).")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Also write the HTML report here.")
@click.option("--no-audio", is_flag=True, help="Skip opening the audio files.")
@click.option("--allow-unlabelled", is_flag=True, help="Accept rows without scenario/action (a corpus synthesized from plain text).")
def validate(manifest, labels, report, no_audio, allow_unlabelled) -> None:
    """Exit 0 when the manifest is valid; else print every bad row (utt_id and reason) and exit 1."""
    from components.data.manifest import ManifestError
    from components.data.validation import ValidationLimits, load_label_set, validate_manifest

    try:
        limits = ValidationLimits(allow_unlabelled=allow_unlabelled)
        result = validate_manifest(manifest, labels=load_label_set(labels), limits=limits, check_audio=not no_audio)
    except (ManifestError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if report:
        from components.data.atomic import atomic_write_text

        atomic_write_text(Path(report), result.to_html())
    if result.ok:
        click.echo(f"{manifest}: {result.n_rows} rows, all checks passed")
        return
    click.echo(result.format_failures())
    click.echo(f"{manifest}: {len(result.failures)} problem(s) in {result.n_rows} rows", err=True)
    sys.exit(1)


# the Whisper inference engine of transcribe and predict
ENGINE_OPTION = click.option("--engine", type=click.Choice(["lean", "transformers"]), default="lean", show_default=True,
                             help="Whisper's inference engine: lean (our plain-torch Whisper; a bare Whisper then loads without transformers) or "
                                  "transformers' WhisperForConditionalGeneration (the same tokens). A cascade whose Whisper has adapters or search cells inside stays on transformers'.")


def _load_model(spec: str):
    """A cascade from a saved directory (cascade.json + cascade.safetensors), or from a ZenML model
    version named ``model[:version]`` (its finetuned_cascade, else its pretrained_cascade)."""
    from components.cascade_files import load_cascade

    if Path(spec).exists():
        try:
            return load_cascade(spec)
        except (FileNotFoundError, ValueError) as e:
            raise click.ClickException(str(e)) from None
    from zenml.client import Client

    name, _, version = spec.partition(":")
    mv = Client().get_model_version(name, version or None)
    for artifact_name in ("finetuned_cascade", "pretrained_cascade"):
        artifact = mv.get_artifact(artifact_name)
        if artifact is not None:
            return load_cascade(artifact.uri)
    raise click.ClickException(f"model version {name}:{mv.number} has no finetuned_cascade or pretrained_cascade artifact")


@main.command()
@click.option("--model", "model_spec", required=True, help="A saved cascade directory, a ZenML model version NAME[:VERSION] (e.g. cascadapt_baselines:latest), or a bare Whisper (a name such as whisper-tiny.en, or a directory) with --nlu.")
@click.option("--nlu", "nlu_spec", help="With a bare Whisper --model: the cascade (directory or NAME[:VERSION]) whose NLU reads its 1-best text.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), required=True, help="Corpus manifest; its noisy audio is decoded.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="predictions.jsonl (SLURP evaluation format + slurp_id + transcript).")
@click.option("--split", type=click.Choice(["train", "nas_val", "test", "all"]), default="all", show_default=True)
@click.option("--mode", type=click.Choice(["e2e", "text"]), default="e2e", show_default=True, help="e2e: through the bridge; text: ASR 1-best text into the NLU (the only mode of a bare Whisper).")
@click.option("--context", type=click.FloatRange(min=0.5, max=30.0), help="Whisper encoder window in seconds (30: Whisper's own); default: the model's.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@ENGINE_OPTION
def predict(model_spec, nlu_spec, manifest, out, split, mode, context, batch_size, engine) -> None:
    """Transcribe and understand every utterance of MANIFEST; one line a recording."""
    import json

    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from components.data.atomic import atomic_write_text
    from components.data.dataset import SpeechDataset, collate
    from components.data.manifest import ManifestError, read_manifest
    from components.models.cascade import Cascade
    from components.models.nlu import load_tokenizer

    try:
        df = read_manifest(manifest)
    except ManifestError as e:
        raise click.ClickException(str(e)) from None
    if split != "all":
        df = df[df["split"] == split]
    model = _load_recogniser(model_spec, context, engine)
    if not isinstance(model, Cascade):  # a bare backbone: the text cascade with another cascade's NLU
        if nlu_spec is None:
            raise click.ClickException(f"{model_spec} is a bare ASR backbone with no NLU; name the cascade whose NLU reads its text with --nlu")
        source = _load_model(nlu_spec)
        model, mode = Cascade(None, model, source.nlu, source.labels).eval(), "text"
    elif nlu_spec is not None:
        raise click.ClickException(f"--nlu goes with a bare Whisper --model; {model_spec} is a cascade with its own NLU")
    tokenizer = load_tokenizer() if mode == "text" else None
    lines = []
    loader = DataLoader(SpeechDataset(df, Path(manifest).parent), batch_size=batch_size, collate_fn=collate)
    for batch in tqdm(loader, desc="predict", unit="batch"):
        for pred, transcript in model.predict(batch["noisy"], batch["lengths"], batch["meta"], mode=mode, tokenizer=tokenizer):
            entities = [{"type": e.type, "filler": e.filler} for e in pred.entities]
            lines.append(json.dumps({"file": pred.file, "slurp_id": pred.slurp_id, "scenario": pred.scenario, "action": pred.action, "entities": entities, "transcript": transcript}))
    atomic_write_text(Path(out), "".join(line + "\n" for line in lines))
    click.echo(f"wrote {len(lines)} predictions to {out}")


def _load_recogniser(spec: str, context: float | None, engine: str = "transformers"):
    """A Whisper backbone (a name such as whisper-tiny.en, a CTranslate2 or Hugging Face directory), a saved
    cascade directory, or a ZenML model version; ``context`` (seconds) overrides the Whisper encoder window.
    ``engine`` "lean": a bare Whisper loads on LeanWhisper (no transformers import), a cascade's plain Whisper
    moves onto it (to_inference_engine); "transformers": both stay on transformers' model."""
    from components.cascade_files import is_saved_cascade
    from components.models.whisper.ct2 import CT2FormatError
    from components.models.whisper.load import NAMED_MODELS, WhisperNotFound
    from components.models.whisper.model import WhisperASR

    if spec in NAMED_MODELS or (Path(spec).is_dir() and not is_saved_cascade(spec)):
        try:
            model = WhisperASR.pretrained(spec, engine=engine)
        except (WhisperNotFound, CT2FormatError) as e:
            raise click.ClickException(str(e)) from None
    elif Path(spec).exists() or ":" in spec or not spec.startswith("whisper"):
        model = _load_model(spec)
        if engine == "lean":
            model.asr.to_inference_engine()
    else:
        raise click.ClickException(f"unknown Whisper model {spec!r}; names: {', '.join(NAMED_MODELS)}, or a directory")
    asr = getattr(model, "asr", model)
    if context is not None:
        if not isinstance(asr, WhisperASR):
            raise click.ClickException(f"--context applies to Whisper backbones; {spec} has a {asr.kind}")
        asr.config.context_seconds = context
    return model


@main.command()
@click.option("--model", "model_spec", default="whisper-tiny.en", show_default=True, help="A Whisper name (whisper-tiny.en, whisper-base, whisper-small), a Whisper directory (CTranslate2 or Hugging Face), a saved cascade directory, or a ZenML model version NAME[:VERSION].")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), required=True, help="A manifest with utt_id and noisy_path (and optionally slurp_id); paths relative to its folder.")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="transcripts.jsonl: one {file, slurp_id, transcript} a recording (what `score --transcripts` reads).")
@click.option("--text", "text_style", type=click.Choice(["raw", "slurp"]), default="slurp", show_default=True, help="raw: exactly what the model decodes; slurp: lower case, no punctuation, numbers spelled out.")
@click.option("--context", type=click.FloatRange(min=0.5, max=30.0), default=None, help="Whisper encoder window in seconds (30 = Whisper's own reference window; default: the model's, 10 s).")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--no-speech-threshold", type=click.FloatRange(min=0.0, max=1.0, min_open=True), default=None,
              help="Whisper: a recording whose no-speech probability is above this gets an empty transcript (0.75 is the service's calibrated default; unset: every recording is transcribed).")
@ENGINE_OPTION
def transcribe(model_spec, manifest, out, text_style, context, batch_size, no_speech_threshold, engine) -> None:
    """Transcribe every recording of MANIFEST; one line a recording."""
    import json

    import soundfile as sf
    from tqdm.auto import tqdm

    from components.data.atomic import atomic_write_text
    from components.data.manifest import ManifestError, read_manifest_rows, resolve_audio
    from components.models.transcription import transcribe_waves
    from components.serving.audio import to_model_rate

    try:
        rows = read_manifest_rows(manifest, required=("utt_id", "noisy_path"))
    except ManifestError as e:
        raise click.ClickException(str(e)) from None
    model = _load_recogniser(model_spec, context, engine)
    asr = getattr(model, "asr", model)
    if no_speech_threshold is not None:
        try:
            asr.configure(no_speech_threshold=no_speech_threshold)
        except ValueError as e:
            raise click.ClickException(f"--no-speech-threshold: {e}") from None
    waves = []
    for line, row in enumerate(rows, start=1):
        path = resolve_audio(manifest, row["noisy_path"])
        try:
            audio, rate = sf.read(path, dtype="float32", always_2d=True)
        except (OSError, RuntimeError) as e:
            raise click.ClickException(f"{manifest} row {line} (utt_id {row['utt_id']}): cannot read {path}: {e}") from None
        waves.append(to_model_rate(audio.mean(axis=1), rate))  # Whisper cuts a clip longer than its window and joins it
    with tqdm(total=len(waves), desc="transcribe", unit="clip") as bar:
        texts = transcribe_waves(model, waves, batch_size, text_style, on_batch=bar.update)
    lines = []
    for row, transcript in zip(rows, texts):
        slurp_id = row.get("slurp_id")
        lines.append(json.dumps({"file": row["utt_id"], "slurp_id": None if slurp_id is None else int(slurp_id), "transcript": transcript}))
    atomic_write_text(Path(out), "".join(line + "\n" for line in lines))
    click.echo(f"wrote {len(lines)} transcripts to {out}")


@main.command()
@click.option("--model", "model_spec", required=True, help="A ZenML model version NAME[:VERSION], a saved cascade directory, or a Whisper name or directory.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Directory to write (must not exist yet: nothing is overwritten).")
@click.option("--format", "fmt", type=click.Choice(["cascade", "hf", "ct2"]), default="cascade", show_default=True,
              help="cascade: the whole cascade, as `predict --model DIR` loads it; hf: its Whisper as a Hugging Face directory (from_pretrained); ct2: its Whisper as a CTranslate2 directory (faster-whisper's WhisperModel).")
def export(model_spec, out, fmt) -> None:
    """Write a trained cascade (or its Whisper) to OUT."""
    from components.cascade_files import save_cascade
    from components.models.cascade import Cascade
    from components.models.whisper.model import WhisperASR

    if Path(out).exists():
        raise click.ClickException(f"{out} exists; export writes a new directory and overwrites nothing")
    model = _load_recogniser(model_spec, None)
    if fmt == "cascade":
        if not isinstance(model, Cascade):
            raise click.ClickException(f"{model_spec} is a bare ASR backbone, not a cascade; use --format hf")
        save_cascade(model, out)
    else:
        asr = getattr(model, "asr", model)
        if not isinstance(asr, WhisperASR):
            raise click.ClickException(f"--format {fmt} needs a Whisper backbone; {model_spec} has a {asr.kind}")
        try:
            asr.export_pretrained(Path(out)) if fmt == "hf" else asr.export_ct2(Path(out))
        except ValueError as e:
            raise click.ClickException(str(e)) from None
    click.echo(f"wrote {out}")


@main.command()
@click.option("--gold", type=click.Path(exists=True, dir_okay=False), required=True, help="Gold SLURP release-format jsonl.")
@click.option("--predictions", type=click.Path(exists=True, dir_okay=False), required=True, help="Predictions jsonl (official SLURP evaluation format, keyed by slurp_id or file).")
@click.option("--transcripts", type=click.Path(exists=True, dir_okay=False), default=None, help="ASR output jsonl ({slurp_id|file, transcript}) for WER/CER.")
@click.option("--allow-missing", is_flag=True, help="Skip gold utterances without a prediction instead of failing.")
def score(gold, predictions, transcripts, allow_missing) -> None:
    """Print SLU metrics (and WER/CER) of PREDICTIONS against GOLD as JSON; fractions, not percent."""
    import json

    from components.metrics.scoring import score_files

    try:
        result = score_files(gold, predictions, transcripts, allow_missing=allow_missing)
    except (SlurpFormatError, ValueError) as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.argument("method", required=False)
def adapters(method) -> None:
    """List the adapter methods and their config fields (or one METHOD's)."""
    from components.adapters import METHODS, describe

    if method is not None and method not in METHODS:
        click.echo(f"error: no adapter method {method!r}; registered: {', '.join(sorted(METHODS))}", err=True)
        sys.exit(1)
    for name in [method] if method else sorted(METHODS):
        click.echo(describe(METHODS[name].config_cls) + "\n")


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--validate", "versions", multiple=True, help="Kubernetes version to validate against (strict), e.g. 1.33.0; repeatable.")
def k8s(folder, versions) -> None:
    """Print the manifests of a kustomization FOLDER (e.g. k8s/overlays/prod) as YAML, like `kubectl kustomize`."""
    import yaml

    from cascadapt.kustomize import KustomizeError, build, validate

    try:
        objects = build(folder)
    except KustomizeError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    errors = [f"{version}: {message}" for version in versions for message in validate(objects, version)]
    if errors:
        click.echo("invalid manifests:\n" + "\n".join(errors), err=True)
        sys.exit(1)
    click.echo(yaml.safe_dump_all(objects, sort_keys=False), nl=False)


if __name__ == "__main__":
    main()
