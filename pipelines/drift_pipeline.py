from zenml import pipeline

from steps.backbones import backbone_artifact
from steps.drift import detect_data_drift


@pipeline(enable_cache=False)
def drift_pipeline(
    new_batch: str,
    reference_manifest: str = "data/target/manifest.jsonl",
    use_model: bool = True,
    backbone_version: str = "latest",
    drift_share: float = 0.3,
    max_reference: int = 500,
) -> None:
    """A new batch of utterances (a manifest: utt_id and an audio path) against the reference corpus: Evidently's
    drift report as a dashboard visualization, the verdict as the ``drift`` artifact and run metadata. With
    ``use_model`` the text features come from the backbone cascade's predictions (unlabelled batches work)."""
    cascade = backbone_artifact(backbone_version) if use_model else None
    detect_data_drift(new_batch, reference_manifest, cascade, drift_share=drift_share, max_reference=max_reference)
