"""Architecture search over the cascade (stage 1), a fixed architecture, and stage-2 training."""

import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import pandas as pd
from zenml import ArtifactConfig, log_metadata, step
from zenml.enums import ArtifactType
from zenml.types import HTMLString

from components.data.dataset import SpeechDataset
from components.models.cascade import Cascade
from components.nas import Architecture, SearchConfig, attach_cells
from components.nas.cascade import SEARCHED_MODULES
from components.nas.plots import architecture_weights_html, pareto_html
from components.nas import recipes as nas_recipes
from steps.results import COLUMNS
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer for Cascade)
from steps.training import checkpoint_folder, make_train_config, train_and_log


@step
def nas_search(
    cascade: Cascade,
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    manifest_path: str,
    search_config: dict,
    space: str = "NFA",
    adapters: Optional[dict] = None,
    frozen_cost: float = 0.0,
    blocks: Tuple[str, ...] = (),
    lam: Optional[float] = None,
    checkpoint_dir: Optional[str] = None,
    modules: Tuple[str, ...] = SEARCHED_MODULES,
    serve_mode: str = "e2e",
) -> Tuple[Annotated[Cascade, "searched_cascade"], Annotated[dict, "architecture"], Annotated[HTMLString, "architecture_weights"]]:
    """Stage 1: first-order DARTS over {frozen, adapter[, fine-tune]} per module of ``modules`` (per layer for
    those in ``blocks``), the architecture scored by the NLU loss in ``serve_mode``; the cascade leaves with
    the derived architecture fixed and its stage-1 weights (the one-stage system)."""
    root = Path(manifest_path).parent
    config = SearchConfig(**search_config)
    if lam is not None:  # one point of a lambda sweep
        config.lam = lam
    settings = {**asdict(config), "space": space, "adapters": adapters, "frozen_cost": frozen_cost, "blocks": list(blocks), "modules": list(modules)}
    if serve_mode != "e2e":  # e2e: the folder of searches made before the setting existed
        settings["serve_mode"] = serve_mode
    config.checkpoint_dir = checkpoint_folder(checkpoint_dir, f"search_{space.lower()}", settings)
    arch, result = nas_recipes.search_cascade(cascade, SpeechDataset(train, root), SpeechDataset(nas_val, root), config, space, adapters, frozen_cost, blocks,
                                              modules=modules, serve_mode=serve_mode)
    architecture = {"space": space, "frozen_cost": frozen_cost, "lambda": config.lam, "blocks": list(blocks), "modules": list(modules), "serve_mode": serve_mode,
                    **json.loads(arch.to_json(result.history))}
    log_metadata({"architecture": result.architecture, "trainable_fraction": architecture["trainable_fraction"], "search_steps": result.steps,
                  "resumed_from": -1 if result.resumed_from is None else result.resumed_from})
    plot = architecture_weights_html(result.history, arch.names, list(arch.candidates), f"{space} architecture weights (lambda {architecture['lambda']})")
    return cascade, architecture, HTMLString(plot)


@step
def fixed_architecture(
    cascade: Cascade, choice: str = "adapter", space: str = "NA", adapters: Optional[dict] = None, blocks: Tuple[str, ...] = (),
    modules: Tuple[str, ...] = SEARCHED_MODULES,
) -> Tuple[Annotated[Cascade, "plugged_cascade"], Annotated[dict, "architecture"]]:
    """Every module (or block) on one candidate without a search (choice "adapter": the full-plugging baseline)."""
    cells = attach_cells(cascade, space, adapters, modules, blocks)
    arch = Architecture(cells)
    choices = {name: choice for name in cells}
    arch.fix(choices)
    return cascade, {"space": space, "architecture": choices, "trainable_fraction": arch.trainable_fraction(choices)}


@step
def train_architecture(
    cascade: Cascade,
    architecture: dict,
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    manifest_path: str,
    train_config: dict,
    checkpoint_dir: Optional[str] = None,
    name: str = "stage2",
) -> Tuple[Annotated[Cascade, "trained_architecture"], Annotated[HTMLString, "stage2_curves"]]:
    """Stage 2: the architecture fixed, only the chosen candidates (and the bridge) train."""
    root = Path(manifest_path).parent
    cfg = make_train_config(train_config, checkpoint_dir, name)
    curves = train_and_log(name, lambda cb: nas_recipes.train_cascade_architecture(cascade, architecture["architecture"], SpeechDataset(train, root), SpeechDataset(nas_val, root), cfg, cb))
    return cascade, curves


@step
def nas_results_table(
    frozen: dict,
    full: dict,
    full_text: dict,
    plugging: dict,
    na: dict,
    nfa_one_stage: List[dict],
    nfa_two_stage: List[dict],
    nfa_two_stage_text: List[dict],
    nfa_architectures: List[dict],
    nfa_cascades: List[Cascade],
    max_trainable_pct: float = 10.0,
    serve_mode: str = "e2e",
) -> Tuple[
    Annotated[pd.DataFrame, "nas_results"],
    Annotated[HTMLString, "nas_results_table"],
    Annotated[HTMLString, "pareto_front"],
    Annotated[Cascade, ArtifactConfig(name="nas_cascade", artifact_type=ArtifactType.MODEL)],
    Annotated[dict, "nas_architecture"],
]:
    """One row a system and mode (trainable parameters as % of full fine-tuning's; NFA rows once per lambda;
    full fine-tuning and NFA two-stage also in text mode, e2e's reference), the Pareto plot, and the selected
    NFA two-stage system as the model version's artifacts: the lowest NLU CER in ``serve_mode`` within
    ``max_trainable_pct`` (the fewest parameters when none fits)."""
    base = full["trainable_parameters"] or 1
    pct = lambda r: 100.0 * r["trainable_parameters"] / base  # noqa: E731
    served = {"e2e": nfa_two_stage, "text": nfa_two_stage_text}[serve_mode]
    two_stage = [two | {"lambda": arch["lambda"], "trainable_pct": pct(two)} for two, arch in zip(served, nfa_architectures)]
    rows = [r | {"trainable_pct": pct(r)} for r in (frozen, full, full_text, plugging, na)]
    for one, e2e, text, arch in zip(nfa_one_stage, nfa_two_stage, nfa_two_stage_text, nfa_architectures):
        rows += [r | {"lambda": arch["lambda"], "trainable_pct": pct(r)} for r in (one, e2e, text)]
    fits = [i for i, r in enumerate(two_stage) if r["trainable_pct"] <= max_trainable_pct]
    best = min(fits, key=lambda i: two_stage[i]["nlu_cer"]) if fits else min(range(len(two_stage)), key=lambda i: two_stage[i]["trainable_pct"])
    selected = two_stage[best]["system"]
    df = pd.DataFrame(rows).reindex(columns=["system", "mode", "lambda", "trainable_pct", *COLUMNS[2:]])
    shown = df.copy()
    for col in ("wer", "cer", "scenario_acc", "action_acc", "intent_acc", "entity_f1", "slu_f1", "nlu_cer"):
        shown[col] = (shown[col] * 100).round(2)
    shown["trainable_pct"] = shown["trainable_pct"].round(2)
    log_metadata({"selected": selected, "serve_mode": serve_mode, **{f"{r['system']}/{r['mode']}": {k: r[k] for k in ("trainable_pct", "wer", "nlu_cer", "intent_acc", "slu_f1")} for r in rows}})
    arch = nfa_architectures[best]
    table = (
        f"<html><body><h2>Architecture search vs baselines</h2><p>Target test split, rates in %. Selected (by NLU CER in {serve_mode} mode): {html.escape(selected)}, "
        f"{html.escape(json.dumps(arch['architecture']))}</p>{shown.to_html(index=False)}</body></html>"
    )
    points = [{"label": r["system"], "trainable_pct": r["trainable_pct"], "nlu_cer": r["nlu_cer"], "wer": r["wer"]} for r in rows if r["mode"] == "e2e"]
    return df, HTMLString(table), HTMLString(pareto_html(points)), nfa_cascades[best], arch | {"system": selected, "mode": serve_mode}
