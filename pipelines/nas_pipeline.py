from typing import Literal, Optional, Tuple

from zenml import Model, pipeline

from pipelines.target_data import ALL_MODULES, target_data
from steps.evaluate import evaluate
from steps.finetune import finetune_full
from steps.search import SEARCHED_MODULES, fixed_architecture, nas_results_table, nas_search, train_architecture
from steps.settings import TargetCorpus, TrainSettings


@pipeline(model=Model(name="cascadapt_nas", description="NFA architecture search over the cascade, with its baselines"))
def nas_pipeline(
    target: TargetCorpus,
    search_config: dict,
    stage2_train: TrainSettings,
    finetune_train: TrainSettings,
    adapters: Optional[dict] = None,
    frozen_cost: float = 0.0,
    blocks: Tuple[str, ...] = (),
    modules: Tuple[str, ...] = SEARCHED_MODULES,
    lambdas: Tuple[float, ...] = (),
    max_trainable_pct: float = 10.0,
    loss_weights: Optional[dict] = None,
    checkpoint_dir: Optional[str] = None,
    serve_mode: Literal["e2e", "text"] = "e2e",
) -> None:
    """target corpus -> frozen, full fine-tuning, full plugging, NA search + stage 2, and per lambda an NFA
    search (one-stage) + stage 2 (two-stage) -> results table (e2e; full fine-tuning and two-stage also in
    text mode), Pareto plot; the best NFA system within
    ``max_trainable_pct`` (its cascade and architecture) in cascadapt_nas.

    ``lambdas``: the penalty weights of the NFA sweep (default: search_config's ``lam``).
    ``modules``: the cascade's modules that get cells (add "bridge" to search it too; otherwise it always trains).
    ``blocks``: modules searched per layer instead of whole (e.g. [asr, nlu]).
    ``loss_weights``: full fine-tuning's, as baseline_pipeline's (the same settings reuse its cached step).
    ``serve_mode``: the mode the selected system will serve in ("e2e" through the bridge, or "text"): the NFA
    and NA searches' architecture steps score the NLU loss in it, and the selection its NLU CER."""
    train, nas_val, test, manifest_path, backbone, _ = target_data(target)

    frozen, _ = evaluate(backbone, test, manifest_path, system="frozen", id="evaluate_frozen")
    tuned, _ = finetune_full(backbone, train, nas_val, manifest_path, train_config=finetune_train.step_dict(), loss_weights=loss_weights, checkpoint_dir=checkpoint_dir)
    full, _ = evaluate(tuned, test, manifest_path, system="full_finetuning", trained_modules=ALL_MODULES, id="evaluate_full")
    full_text, _ = evaluate(tuned, test, manifest_path, system="full_finetuning", mode="text", trained_modules=ALL_MODULES, id="evaluate_full_text")

    plugged, plugged_arch = fixed_architecture(backbone, choice="adapter", space="NA", adapters=adapters, blocks=blocks, modules=modules)
    plugged, _ = train_architecture(plugged, plugged_arch, train, nas_val, manifest_path, train_config=stage2_train.step_dict(), checkpoint_dir=checkpoint_dir, name="plugging", id="train_plugging")
    plugging, _ = evaluate(plugged, test, manifest_path, system="full_plugging", id="evaluate_plugging")

    na_cascade, na_arch, _ = nas_search(backbone, train, nas_val, manifest_path, search_config=search_config, space="NA", adapters=adapters, frozen_cost=frozen_cost, blocks=blocks, modules=modules, checkpoint_dir=checkpoint_dir, serve_mode=serve_mode, id="search_na")
    na_cascade, _ = train_architecture(na_cascade, na_arch, train, nas_val, manifest_path, train_config=stage2_train.step_dict(), checkpoint_dir=checkpoint_dir, name="na_stage2", id="train_na")
    na, _ = evaluate(na_cascade, test, manifest_path, system="NA", id="evaluate_na")

    one_stage, two_stage, two_stage_text, architectures, cascades = [], [], [], [], []
    for lam in lambdas or (search_config.get("lam", 1.0),):
        tag = f"lam{lam:g}"
        name = tag.replace(".", "_")  # step ids without dots
        nfa_cascade, nfa_arch, _ = nas_search(backbone, train, nas_val, manifest_path, search_config=search_config, space="NFA", adapters=adapters, frozen_cost=frozen_cost, blocks=blocks, modules=modules, lam=lam, checkpoint_dir=checkpoint_dir, serve_mode=serve_mode, id=f"search_nfa_{name}")
        nfa_one, _ = evaluate(nfa_cascade, test, manifest_path, system=f"NFA_one_stage_{tag}", id=f"evaluate_nfa_one_stage_{name}")
        nfa_cascade, _ = train_architecture(nfa_cascade, nfa_arch, train, nas_val, manifest_path, train_config=stage2_train.step_dict(), checkpoint_dir=checkpoint_dir, name=f"nfa_stage2_{name}", id=f"train_nfa_{name}")
        nfa_two, _ = evaluate(nfa_cascade, test, manifest_path, system=f"NFA_two_stage_{tag}", id=f"evaluate_nfa_two_stage_{name}")
        nfa_two_text, _ = evaluate(nfa_cascade, test, manifest_path, system=f"NFA_two_stage_{tag}", mode="text", id=f"evaluate_nfa_two_stage_text_{name}")
        one_stage.append(nfa_one)
        two_stage.append(nfa_two)
        two_stage_text.append(nfa_two_text)
        architectures.append(nfa_arch)
        cascades.append(nfa_cascade)

    nas_results_table(frozen, full, full_text, plugging, na, one_stage, two_stage, two_stage_text, architectures, cascades, max_trainable_pct=max_trainable_pct, serve_mode=serve_mode)
