from typing import Optional, Tuple

from zenml import Model, pipeline

from pipelines.target_data import target_data
from steps.multitask import add_new_task, define_tasks, evaluate_tasks, finetune_tasks, multitask_results, train_task_adapters
from steps.no_speech import fit_no_speech
from steps.promotion import promote_adapters
from steps.settings import AsrOptions, Methods, TargetCorpus, TrainSettings


@pipeline(model=Model(name="cascadapt_multitask", description="Per-task adapters for the cascade's ASR (HRA and its baselines), the winner promoted when it beats production"))
def multitask_pipeline(
    target: TargetCorpus,
    methods: Methods,
    train_config: TrainSettings,
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
    """target corpus -> (``no_speech_probe``: the cascade's no-speech probe fitted, then served with the adapters)
    -> tasks (``task_by`` columns; one held out as the new task) -> per method: every task's adapter trained
    jointly, evaluated per task, and for methods with shared parameters the new task added afterwards
    (``new_task`` variants) -> comparison table and plots -> the winner promoted if better.

    ``methods``: {system: {adapter: {method, ...config}, new_task: [head | mhr_z | mhr_mu]}} or
    {system: {full: true}} (full fine-tuning of the ASR per task); ``train`` in a method's entry replaces
    ``train_config`` for it. A method without ``new_task`` variants trains the new task with the others
    (its tasks share nothing). ``asr_options``: the ASR's run-time options while the systems train and
    score, e.g. Whisper's {pad_to: longest, margin_seconds: 1.0}; the frozen backbone scores with its own."""
    train, nas_val, test, manifest_path, backbone, md5 = target_data(target)
    adapt_tasks_and_promote(
        train, nas_val, test, manifest_path, backbone, md5, methods, train_config, new_task_train, task_by, max_tasks, new_task, metric, export_dir, checkpoint_dir,
        asr_options, no_speech_probe,
    )


def adapt_tasks_and_promote(
    train, nas_val, test, manifest_path, backbone, md5, methods: Methods, train_config: TrainSettings, new_task_train: Optional[TrainSettings], task_by: Tuple[str, ...],
    max_tasks: Optional[int], new_task: Optional[str], metric: str, export_dir: Optional[str], checkpoint_dir: Optional[str], asr_options: Optional[AsrOptions] = None,
    no_speech_probe: bool = False,
) -> None:
    """The multi-task steps on target_data's outputs (multitask_pipeline's docstring); the retraining pipeline runs them too."""
    options = asr_options.model_dump() if asr_options else None
    if no_speech_probe:  # off by default: on the test split it rejected more commands than Whisper's own (README, "No answers to silence")
        backbone, _ = fit_no_speech(backbone, train, nas_val, manifest_path)
    train, nas_val, test, tasks, new = define_tasks(train, nas_val, test, task_by=task_by, max_tasks=max_tasks, new_task=new_task)

    scores = [evaluate_tasks(backbone, test, manifest_path, id="evaluate_frozen")]
    bundles = []
    for system, spec in methods.items():
        method_train = (spec.train or train_config).step_dict()
        if spec.full:
            bundle, _ = finetune_tasks(
                backbone, train, nas_val, manifest_path, tasks, new, method_train, system=system, checkpoint_dir=checkpoint_dir, asr_options=options, id=f"train_{system}"
            )
        else:
            bundle, _ = train_task_adapters(
                backbone, train, nas_val, manifest_path, system, spec.adapter, tasks, new, with_new_task=not spec.new_task,
                train_config=method_train, checkpoint_dir=checkpoint_dir, asr_options=options, id=f"train_{system}",
            )
            for variant in spec.new_task:
                grown, _ = add_new_task(
                    backbone, bundle, train, nas_val, manifest_path, variant, new, (new_task_train or train_config).step_dict(), checkpoint_dir, id=f"add_task_{system}_{variant}"
                )
                scores.append(evaluate_tasks(backbone, test, manifest_path, adapters=grown, id=f"evaluate_{system}_{variant}"))
                bundles.append(grown)
        scores.append(evaluate_tasks(backbone, test, manifest_path, adapters=bundle, id=f"evaluate_{system}"))
        bundles.append(bundle)
    _, per_task, _, _, _, winner = multitask_results(scores, bundles, tasks, new, metric=metric)
    promote_adapters(winner, per_task, test, manifest_path, md5, metric=metric, export_dir=export_dir)
