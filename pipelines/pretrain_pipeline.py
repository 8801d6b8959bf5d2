from typing import Optional, Tuple

from zenml import Model, pipeline

from steps.data_version import tracked_data_version
from steps.ingest import ingest
from steps.pretrain import init_cascade, pretrain_asr, pretrain_asr_enhanced, pretrain_bridge, pretrain_nlu, pretrain_se
from steps.settings import BridgeInput
from steps.split import fit_to_backbone, split_corpus
from steps.validate import validate_corpus


@pipeline(model=Model(name="cascadapt_backbones", description="SE, ASR, NLU and bridge pre-trained on the source domain"))
def pretrain_pipeline(
    source_text: str,
    nlu_slurp_jsonl: str,
    asr: dict,
    se: dict,
    se_train: dict,
    asr_train: dict,
    nlu_train: dict,
    bridge_train: Optional[dict] = None,
    asr_enhanced_train: Optional[dict] = None,
    bridge_input: BridgeInput = "residual",
    corpus_name: str = "source",
    voices: str = "source",
    snrs: Tuple[float, ...] = (0.0, 5.0, 10.0, 20.0),
    limit: Optional[int] = None,
    seed: int = 0,
    data_root: str = ".",
    checkpoint_dir: Optional[str] = "~/.cache/cascadapt/checkpoints/pretrain",
) -> None:
    """source corpus -> validate -> split -> SE -> ASR -> ASR on enhanced noisy audio (optional) -> NLU (gold text) -> bridge; a new cascadapt_backbones version.

    ``bridge_input``: "residual" (the default: zero at the start, nothing to pre-train) or "layer_norm" (a word
    vector from the ASR states, pre-trained with ``bridge_train``); components/models/cascade.py."""
    if bridge_input != "residual" and bridge_train is None:  # fail before any step, not after an hour of pre-training
        raise ValueError(f"the {bridge_input!r} bridge is pre-trained: give the pretrain pipeline bridge_train")
    md5 = tracked_data_version(data_root=data_root)
    manifest, manifest_path, _ = ingest(md5, slurp_jsonl=source_text, corpus_name=corpus_name, data_root=data_root, voices=voices, snrs=snrs, limit=limit, seed=seed)
    _, summary = validate_corpus(manifest_path, allow_unlabelled=True)
    cascade = init_cascade(asr=asr, se=se, seed=seed, bridge_input=bridge_input)
    train, nas_val, _ = fit_to_backbone(cascade, *split_corpus(manifest, summary))
    cascade, _ = pretrain_se(cascade, train, nas_val, manifest_path, train_config=se_train, checkpoint_dir=checkpoint_dir)
    cascade, _ = pretrain_asr(cascade, train, nas_val, manifest_path, train_config=asr_train, checkpoint_dir=checkpoint_dir)
    cascade, _ = pretrain_asr_enhanced(cascade, train, nas_val, manifest_path, train_config=asr_enhanced_train, checkpoint_dir=checkpoint_dir)
    cascade, _ = pretrain_nlu(cascade, slurp_jsonl=nlu_slurp_jsonl, train_config=nlu_train, split_seed=seed, checkpoint_dir=checkpoint_dir)
    pretrain_bridge(cascade, train, nas_val, manifest_path, train_config=bridge_train, checkpoint_dir=checkpoint_dir)
