from typing import Optional, Tuple

from zenml import Model, pipeline

from pipelines.multitask_pipeline import adapt_tasks_and_promote
from pipelines.target_data import target_data
from steps.backbones import backbone_artifact
from steps.drift import decide_retraining, detect_data_drift
from steps.settings import AsrOptions, Methods, TargetCorpus, TrainSettings


@pipeline(
    dynamic=True,  # the training steps exist only in runs that retrain
    enable_cache=False,
    model=Model(name="cascadapt_multitask", description="Per-task adapters for the cascade's ASR (HRA and its baselines), the winner promoted when it beats production"),
)
def retraining_pipeline(
    target: TargetCorpus,
    new_batch: str,
    methods: Methods,
    train_config: TrainSettings,
    reference_manifest: str = "data/target/manifest.jsonl",
    drift_share: float = 0.3,
    max_confidence_drop: float = 0.05,
    force: bool = False,
    new_task_train: Optional[TrainSettings] = None,
    task_by: Tuple[str, ...] = ("speaker",),
    max_tasks: Optional[int] = None,
    new_task: Optional[str] = None,
    metric: str = "wer",
    export_dir: Optional[str] = None,
    checkpoint_dir: Optional[str] = None,
    asr_options: Optional[AsrOptions] = None,
    no_speech_probe: bool = False,
) -> None:
    """A new batch against the reference corpus (drift of its utterance features, the backbone's confidence)
    -> only when it drifted or the confidence fell (or ``force``): the multi-task adaptation of
    multitask_pipeline on the target data, whose winner is promoted only if it beats production."""
    drift, _, _ = detect_data_drift(new_batch, reference_manifest, backbone_artifact(target.backbone_version), drift_share=drift_share)
    decision = decide_retraining(drift, max_confidence_drop=max_confidence_drop, force=force)
    if not decision.load()["retrain"]:
        return
    train, nas_val, test, manifest_path, backbone, md5 = target_data(target)
    adapt_tasks_and_promote(
        train, nas_val, test, manifest_path, backbone, md5, methods, train_config, new_task_train, task_by, max_tasks, new_task, metric, export_dir, checkpoint_dir, asr_options,
        no_speech_probe,
    )
