"""Promotion on the ZenML Model control plane: the run's winning adapters become the production version
only when they beat the current production version on this run's test set."""

from pathlib import Path
from typing import Annotated, Optional

import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.enums import ModelStages

from components import multitask
from components.data.dataset import SpeechDataset
from components.multitask import TaskAdapters
from components.multitask.summary import SCORES
from steps.materializers import TaskAdaptersMaterializer  # noqa: F401  (registers the materializer)


def production_scores(model_name: str, test_ds: SpeechDataset, tasks: list[str]) -> Optional[dict]:
    """The production version's winning adapters (on their own backbone) scored on ``test_ds``, or None
    when no version is in production. {"version", "system", "tasks", "scores": per-task rows}."""
    client = Client()
    try:
        production = client.get_model_version(model_name, ModelStages.PRODUCTION)
    except KeyError:
        return None
    bundle = production.get_artifact("winning_adapters").load()
    backbone = client.get_artifact_version(bundle.backbone).load()
    common = [t for t in tasks if t in bundle.tasks]
    rows = multitask.evaluate_tasks(backbone, bundle, test_ds, tasks=common) if common else []
    return {"version": production.number, "system": bundle.system, "tasks": common, "scores": rows}


@step
def promote_adapters(
    winner: TaskAdapters, task_scores: pd.DataFrame, test: pd.DataFrame, manifest_path: str, data_md5: str, metric: str = "wer", export_dir: Optional[str] = None
) -> Annotated[dict, "promotion"]:
    """Compare the winner with the production version on the same test rows (the tasks both serve; lower
    ``metric`` is better, a tie keeps production); promote only when better. A promoted winner is also
    copied to ``export_dir``/<model>-v<version> for serving. Logs the lineage on the model version."""
    model = get_step_context().model
    mine = task_scores[task_scores["system"] == winner.system].set_index("task")
    production = production_scores(model.name, SpeechDataset(test, Path(manifest_path).parent), sorted(mine.index))
    decision = {"candidate": winner.system, "metric": metric, "version": model.number}
    if production is None:
        decision |= {"promoted": True, "reason": "no version in production yet", "candidate_score": float(mine[metric].mean())}
    elif not production["tasks"]:
        decision |= {"promoted": False, "reason": f"production version {production['version']} serves none of this run's tasks; promote by hand if intended"}
    else:
        theirs = float(pd.DataFrame(production["scores"])[metric].mean())
        ours = float(mine.loc[production["tasks"], metric].mean())
        better = ours < theirs
        decision |= {
            "promoted": better, "candidate_score": ours, "production_score": theirs, "production_version": production["version"], "compared_tasks": len(production["tasks"]),
            "reason": f"mean {metric} {ours:.4f} vs production v{production['version']} {theirs:.4f} on the same {len(production['tasks'])} task(s)",
        }
    if decision["promoted"]:
        model.set_stage(ModelStages.PRODUCTION, force=True)
        if export_dir:
            decision["exported_to"] = str(winner.copy_to(Path(export_dir) / f"{model.name}-v{model.number}").root)
    print(f"promotion: {'PROMOTED' if decision['promoted'] else 'kept production'} - {decision['reason']}", flush=True)
    lineage = {"data_md5": data_md5, "backbone_artifact": winner.backbone, "adapters": winner.system, "metrics": {k: float(mine[k].mean()) for k in SCORES if k in mine}}
    log_metadata({"promotion": decision, "lineage": lineage}, infer_model=True)
    return decision
