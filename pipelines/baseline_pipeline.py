from typing import Optional

from zenml import Model, pipeline

from pipelines.target_data import ALL_MODULES, target_data
from steps.evaluate import evaluate, evaluate_pocketsphinx
from steps.finetune import finetune_full, train_nlu_on_1best
from steps.results import results_table
from steps.settings import TargetCorpus, TrainSettings


@pipeline(model=Model(name="cascadapt_baselines", description="Frozen and fully fine-tuned cascades on the target domain"))
def baseline_pipeline(
    target: TargetCorpus,
    finetune_train: TrainSettings,
    loss_weights: Optional[dict] = None,
    checkpoint_dir: Optional[str] = None,
    with_pocketsphinx: bool = True,
    lm_text: Optional[str] = None,
    nlu_on_1best_train: Optional[TrainSettings] = None,
) -> None:
    """target corpus -> frozen and fully fine-tuned cascades (end-to-end and text modes), pocketsphinx
    feeding the frozen NLU, and (with ``nlu_on_1best_train``) the frozen ASR with its NLU retrained on the
    ASR's 1-best -> results table."""
    train, nas_val, test, manifest_path, backbone, _ = target_data(target)

    frozen, _ = evaluate(backbone, test, manifest_path, system="frozen", mode="e2e", id="evaluate_frozen")
    frozen_text, _ = evaluate(backbone, test, manifest_path, system="frozen", mode="text", id="evaluate_frozen_text")
    tuned, _ = finetune_full(backbone, train, nas_val, manifest_path, train_config=finetune_train.step_dict(), loss_weights=loss_weights, checkpoint_dir=checkpoint_dir)
    full, _ = evaluate(tuned, test, manifest_path, system="full_finetuning", mode="e2e", trained_modules=ALL_MODULES, id="evaluate_full")
    full_text, _ = evaluate(tuned, test, manifest_path, system="full_finetuning", mode="text", trained_modules=ALL_MODULES, id="evaluate_full_text")
    full_beam = evaluate(tuned, test, manifest_path, system="full_finetuning", trained_modules=ALL_MODULES, lm_text=lm_text, id="evaluate_full_beam")[0] if lm_text else None
    external = evaluate_pocketsphinx(backbone, test, manifest_path) if with_pocketsphinx else None
    nlu_on_1best = None
    if nlu_on_1best_train:
        retrained, _ = train_nlu_on_1best(backbone, train, nas_val, manifest_path, train_config=nlu_on_1best_train.step_dict(), checkpoint_dir=checkpoint_dir)
        nlu_on_1best = evaluate(retrained, test, manifest_path, system="frozen_asr_nlu_on_1best", mode="text", trained_modules=("nlu",), id="evaluate_nlu_on_1best")[0]
    results_table(frozen, frozen_text, full, full_text, external, full_beam, nlu_on_1best)
