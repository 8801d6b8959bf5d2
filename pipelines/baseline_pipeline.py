from typing import Optional, Tuple

from zenml import Model, pipeline

from steps.backbones import backbone_artifact
from steps.data_version import tracked_data_version
from steps.evaluate import evaluate, evaluate_pocketsphinx
from steps.finetune import finetune_full
from steps.ingest import ingest
from steps.results import results_table
from steps.split import split_corpus
from steps.validate import validate_corpus

ALL = ("se", "asr", "bridge", "nlu")


@pipeline(model=Model(name="cascadapt_baselines", description="Frozen and fully fine-tuned cascades on the target domain"))
def baseline_pipeline(
    target_slurp_jsonl: str,
    finetune_train: dict,
    corpus_name: str = "target",
    voices: str = "target",
    snrs: Tuple[float, ...] = (0.0, 5.0, 10.0, 20.0),
    limit: Optional[int] = None,
    seed: int = 0,
    data_root: str = ".",
    backbone_version: str = "latest",
    loss_weights: Optional[dict] = None,
    checkpoint_dir: Optional[str] = None,
    with_pocketsphinx: bool = True,
    lm_text: Optional[str] = None,
) -> None:
    """target corpus -> frozen and fully fine-tuned cascades (end-to-end and text modes), and pocketsphinx
    feeding the frozen NLU -> results table."""
    md5 = tracked_data_version(data_root=data_root)
    manifest, manifest_path, _ = ingest(md5, slurp_jsonl=target_slurp_jsonl, corpus_name=corpus_name, data_root=data_root, voices=voices, snrs=snrs, limit=limit, seed=seed)
    _, summary = validate_corpus(manifest_path)
    train, nas_val, test = split_corpus(manifest, summary)
    backbone = backbone_artifact(backbone_version)

    frozen, _ = evaluate(backbone, test, manifest_path, system="frozen", mode="e2e", id="evaluate_frozen")
    frozen_text, _ = evaluate(backbone, test, manifest_path, system="frozen", mode="text", id="evaluate_frozen_text")
    tuned, _ = finetune_full(backbone, train, nas_val, manifest_path, train_config=finetune_train, loss_weights=loss_weights, checkpoint_dir=checkpoint_dir)
    full, _ = evaluate(tuned, test, manifest_path, system="full_finetuning", mode="e2e", trained_modules=ALL, id="evaluate_full")
    full_text, _ = evaluate(tuned, test, manifest_path, system="full_finetuning", mode="text", trained_modules=ALL, id="evaluate_full_text")
    full_beam = evaluate(tuned, test, manifest_path, system="full_finetuning", trained_modules=ALL, lm_text=lm_text, id="evaluate_full_beam")[0] if lm_text else None
    external = evaluate_pocketsphinx(backbone, test, manifest_path) if with_pocketsphinx else None
    results_table(frozen, frozen_text, full, full_text, external, full_beam)
