"""What every training step shares: where its checkpoints live, and how its metrics reach ZenML."""

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

from zenml import get_step_context, log_metadata
from zenml.types import HTMLString

from components.training.curves import curves_html
from components.training.loop import TrainConfig, TrainResult


# Settings that a resumed run may change: budgets (a longer run continues a shorter one) and bookkeeping.
RESUMABLE = {"max_epochs", "max_steps", "patience", "progress", "checkpoint_every", "keep_checkpoints", "device", "record_every"}


def checkpoint_folder(checkpoint_dir: Optional[str], module: str, settings: Optional[dict] = None) -> Optional[str]:
    """<checkpoint_dir>/<module>/<content hash of the input cascade>-<hash of the settings>: the same step
    on the same input weights with the same settings resumes (also in a later run whose upstream steps
    re-ran to the same weights); another input or another learning rate, loss or search space never
    picks it up. Settings in RESUMABLE do not count."""
    if not checkpoint_dir:
        return None
    source = get_step_context().inputs["cascade"][0]
    kept = {k: v for k, v in (settings or {}).items() if k not in RESUMABLE}
    digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return str(Path(checkpoint_dir).expanduser() / module / f"{(source.content_hash or str(source.id))[:16]}-{digest}")


def make_train_config(train_config: dict, checkpoint_dir: Optional[str], module: str, **also_hashed) -> TrainConfig:
    """TrainConfig with its checkpoint folder; ``also_hashed``: settings outside train_config that change what
    trains (loss weights), so a checkpoint made with others is not resumed. None values do not count."""
    settings = {**train_config, **{k: v for k, v in also_hashed.items() if v is not None}}
    return TrainConfig(**{**train_config, "checkpoint_dir": checkpoint_folder(checkpoint_dir, module, settings)})


def train_seconds(result: TrainResult) -> float:
    """Seconds spent in training steps (validation excluded), over the run's epochs."""
    return round(sum(r.get("seconds", 0.0) for r in result.history), 2)


def train_and_log(module: str, run: Callable[[Callable[[dict], None]], TrainResult]) -> HTMLString:
    """Run a recipe, log its epoch metrics to ZenML, and return its curves."""

    def on_metrics(record: dict) -> None:
        if "train_loss" in record:  # epoch records only; step records are too many
            print(f"[{module}] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()), flush=True)
            log_metadata({f"{module}_last_epoch": {k: v for k, v in record.items() if isinstance(v, (int, float))}})

    result = run(on_metrics)
    log_metadata({f"{module}_epochs": len(result.history), f"{module}_best_epoch": result.best_epoch or 0, f"{module}_best_val": result.best_metric or 0.0, f"{module}_steps": result.steps,
                  f"{module}_train_seconds": train_seconds(result), f"{module}_resumed_from": -1 if result.resumed_from is None else result.resumed_from})
    return HTMLString(curves_html({module: result.history}, f"{module} training"))


