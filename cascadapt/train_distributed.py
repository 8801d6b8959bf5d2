"""Train the speech recogniser (ConformerCTC, CTC on clean speech) data-parallel under torchrun.

    # demo, no data needed: a few SLURP sentences spoken by espeak-ng here, a tiny model, CPU is fine
    torchrun --standalone --nproc_per_node 2 -m cascadapt.train_distributed --demo --out runs/asr-ddp-demo
    # a corpus made by `cascadapt synth` or the data pipeline: its train split, validated on nas_val
    torchrun --nproc_per_node 4 -m cascadapt.train_distributed --manifest data/target/manifest.jsonl --out runs/asr-ddp

The recipe is components.training.recipes.train_asr, unchanged: the shared loop trains data-parallel
whenever torchrun started the process (components/training/distributed.py). --batch-size is the global
batch, split across the processes, so a run's result does not depend on how many there are. Without
torchrun it trains in one process.

Rank 0 writes OUT/asr.safetensors (the weights train returns: the best epoch's on validation),
OUT/history.json (the epoch records, the ASR config, the world size) and prints each epoch record.
Checkpoints go to OUT/checkpoints: the same command again (a restarted pod) resumes from them.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import click
import torch

from components.models.asr import ASRConfig, ConformerCTC
from components.training import distributed
from components.training.loop import TrainConfig

SAMPLE = Path(__file__).resolve().parents[1] / "components/data/sample/slurp_devel_sample.jsonl"
SIZES = {
    "tiny": ASRConfig(n_mels=40, subsampling_channels=8, d_model=48, heads=2, ffn=96, layers=2, conv_kernel=15),
    "base": ASRConfig(),
}
DEMO_VOICE = ("espeak-ng", "en-us")  # espeak-ng starts in milliseconds: a few sentences take ~1 s


def demo_items(n: int) -> list[dict]:
    """The first ``n`` sentences of the shipped SLURP sample, spoken by espeak-ng, as items that
    components.data.dataset.collate batches (clean = noisy: the demo adds no noise)."""
    import soundfile as sf

    from components.data.slurp import read_records
    from components.data.speakers import Speaker
    from components.data.tts import synthesize

    records = read_records(SAMPLE)[:n]
    with tempfile.TemporaryDirectory(prefix="cascadapt-ddp-demo-") as tmp:
        paths = [Path(tmp) / f"{r.slurp_id}.flac" for r in records]
        synthesize(Speaker(*DEMO_VOICE), [r.sentence for r in records], paths)
        waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in paths]
    return [
        {"clean": w, "noisy": w, "meta": {"utt_id": str(r.slurp_id), "text": r.sentence}}
        for r, w in zip(records, waves)
    ]


def manifest_splits(path: str):
    from components.data.dataset import SpeechDataset
    from components.data.manifest import read_manifest

    df = read_manifest(path)
    return tuple(SpeechDataset(df[df["split"] == split], Path(path).parent) for split in ("train", "nas_val"))


@click.command()
@click.option("--demo", is_flag=True, help="Synthesize a few utterances with espeak-ng instead of reading a corpus.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), help="Corpus manifest (train and nas_val splits).")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Weights, history and checkpoints go here.")
@click.option("--utterances", type=click.IntRange(min=2), default=16, show_default=True, help="--demo: how many (the last quarter validates).")
@click.option("--size", type=click.Choice(sorted(SIZES)), default=None, help="ASR size. [default: tiny with --demo, else base]")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many optimizer steps in total.")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Global batch, over all processes.")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto: cuda when available (one GPU a process), else cpu.")
def main(demo, manifest, out, utterances, size, epochs, max_steps, batch_size, lr, seed, device) -> None:
    """Train the ConformerCTC data-parallel (under torchrun) or alone."""
    from components.training.recipes import train_asr

    if demo == bool(manifest):
        raise click.UsageError("give exactly one of --demo and --manifest")
    info = distributed.init_from_env(device)
    try:
        if demo:
            # Rank 0 speaks the sentences and sends the audio to the others: every rank holds the very
            # same data, and nodes need neither espeak-ng nor a shared folder.
            items = distributed.broadcast_object(demo_items(utterances) if info.is_main else None)
            cut = len(items) - max(1, len(items) // 4)
            train_set, val_set = items[:cut], items[cut:]
        else:
            train_set, val_set = manifest_splits(manifest)
        asr_config = SIZES[size or ("tiny" if demo else "base")]
        torch.manual_seed(seed)  # the initial weights (DDP copies rank 0's to the others)
        asr = ConformerCTC(asr_config)
        cfg = TrainConfig(
            max_epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, seed=seed, device=device,
            checkpoint_dir=str(Path(out) / "checkpoints"), bucket_by_length=not demo, patience=None, progress=False,
        )
        result = train_asr(asr, train_set, val_set, cfg, on_metrics=_print_epochs)
        if info.is_main:
            _write(Path(out), asr, result, asr_config, info)
    finally:
        distributed.cleanup()


def _print_epochs(record: dict) -> None:
    if "train_loss" in record:  # epoch records; step records are for a tracker
        click.echo(json.dumps(record))


def _write(out: Path, asr: ConformerCTC, result, asr_config: ASRConfig, info) -> None:
    from safetensors.torch import save_file

    from components.data.atomic import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in asr.state_dict().items()}, str(out / "asr.safetensors"))
    summary = {
        "world_size": info.world_size,
        "asr_config": asdict(asr_config),
        "steps": result.steps,
        "best_epoch": result.best_epoch,
        "best_metric": result.best_metric,
        "resumed_from": result.resumed_from,
        "history": result.history,
    }
    atomic_write_text(out / "history.json", json.dumps(summary, indent=2))
    click.echo(f"wrote {out / 'asr.safetensors'} and {out / 'history.json'}")


if __name__ == "__main__":
    main()
