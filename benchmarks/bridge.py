"""The bridge path (e2e) against the text path, after the same full fine-tuning: does the NLU loss through
the bridge help, or does the bridge cost what the text mode gets for free?

    python benchmarks/bridge.py [--config configs/baselines.yaml] [--bridges residual residual:0.5 layer_norm]
                                [--out benchmarks/results/bridge.json]

Starts from the newest finished run with the target data steps (multitask, baseline or NAS pipeline: its
fit_to_backbone splits and its backbone artifact), so every bridge sees the same backbone, rows and steps.
Per bridge kind (components/models/cascade.py BRIDGE_INPUTS; "residual:P" is the residual bridge with
bridge_dropout P): the backbone with that bridge ("layer_norm" keeps the pre-trained bridge; "residual"
starts at zero), scored frozen, then fully fine-tuned with the
config's ``finetune_train`` and ``loss_weights`` (as the baseline pipeline does) and scored again, each in
e2e and text mode on the noisy test split. Rates are fractions. The JSON is written after each bridge.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.machine import describe, git_commit  # noqa: E402
from benchmarks.runs import newest_target_run, target_inputs  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def with_bridge(cascade, spec: str):
    """A copy of the cascade with the bridge ``spec`` names ("kind" or "residual:dropout"); the pre-trained
    bridge is kept when the kind matches."""
    from components.models.cascade import Cascade

    kind, _, dropout = spec.partition(":")
    model = copy.deepcopy(cascade)
    if model.bridge_input == kind:
        model.bridge_dropout = float(dropout or 0.0)
        return model
    return Cascade(model.se, model.asr, model.nlu, model.labels, bridge_input=kind, bridge_dropout=float(dropout or 0.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs/baselines.yaml"), help="its finetune_train and loss_weights")
    parser.add_argument("--bridges", nargs="+", default=["residual", "layer_norm"])
    parser.add_argument("--test-rows", type=int, help="score the first N test rows only (a quick check, not a figure)")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results/bridge.json"))
    args = parser.parse_args()

    from components.data.dataset import SpeechDataset
    from components.training import recipes
    from components.training.loop import TrainConfig

    params = yaml.safe_load(Path(args.config).read_text())["parameters"]
    train_config, loss_weights = params["finetune_train"], params.get("loss_weights")
    run = newest_target_run()
    splits, root, backbone_artifact = target_inputs(run)
    train, nas_val, test = splits["train"], splits["nas_val"], splits["test"].iloc[: args.test_rows]
    backbone = backbone_artifact.load()
    tr, va, te = (SpeechDataset(df, root) for df in (train, nas_val, test))
    print(f"{run.name}: {len(train)} train, {len(nas_val)} nas_val, {len(test)} test rows; backbone {backbone_artifact.name} v{backbone_artifact.version}", flush=True)

    records, commit = [], git_commit()  # the code that runs, whatever lands while it does

    def score(bridge: str, stage: str, model, minutes: float | None = None) -> None:
        for mode in ("e2e", "text"):
            metrics, _ = recipes.evaluate_cascade(model, te, mode=mode)
            records.append({"bridge": bridge, "stage": stage, "mode": mode, **metrics, "train_minutes": minutes})
            print(f"{bridge} {stage} {mode}: wer {metrics['wer']:.3f} intent {metrics['intent_acc']:.3f} slu_f1 {metrics['slu_f1']:.3f}", flush=True)

    def write() -> None:
        out = {
            "benchmark": "bridge",
            "machine": describe(),
            "commit": commit,
            "config": {"file": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_relative_to(REPO) else args.config, "finetune_train": train_config, "loss_weights": loss_weights},
            "run": run.name,
            "backbone_artifact": {"name": backbone_artifact.name, "version": str(backbone_artifact.version), "id": str(backbone_artifact.id)},
            "rows": {"train": len(train), "nas_val": len(nas_val), "test": len(test)},
            "results": records,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1, default=str) + "\n")

    for bridge in args.bridges:
        model = with_bridge(backbone, bridge)
        if not any(r["bridge"].partition(":")[0] == bridge.partition(":")[0] for r in records):  # dropout does not change the frozen cascade
            score(bridge, "frozen", model)
        cfg = TrainConfig(**train_config)
        t0 = time.perf_counter()
        result = recipes.finetune_cascade(model.train(), tr, va, cfg, lambda r: "train_loss" in r and print(f"[{bridge}] {r}", flush=True), weights=loss_weights)
        minutes = round((time.perf_counter() - t0) / 60, 2)
        score(bridge, "full_finetuning", model, minutes)
        records[-1]["history"] = result.history
        write()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
