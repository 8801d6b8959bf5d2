from typing import Optional, Tuple

from zenml import Model, pipeline

from pipelines.target_data import target_data
from steps.arte import align_teacher, arte_results, generate_examples
from steps.evaluate import evaluate
from steps.settings import TargetCorpus, TrainSettings
from steps.search import fixed_architecture, train_architecture


@pipeline(model=Model(name="cascadapt_arte", description="Tailored training data (ARTE): the teacher aligned to the student's gains, and what its data is worth"))
def arte_pipeline(
    target: TargetCorpus,
    train_config: TrainSettings,
    update_config: TrainSettings,
    arte_config: dict,
    n_generated: int = 256,
    preference_pool: int = 96,
    noise_kinds: Tuple[str, ...] = ("white", "pink", "babble"),
    adapters: Optional[dict] = None,
    blocks: Tuple[str, ...] = (),
    seeds: Optional[Tuple[int, ...]] = None,
) -> None:
    """target corpus -> the student (adapters everywhere, stage-2 training) on the train split -> ARTE aligns
    the teacher on it -> n_generated examples from the aligned and from the uniform policy -> the student
    trained again with each set -> the three on the test split. All of it once a seed of ``seeds`` (default:
    the target's seed): the students' data order, the teacher's candidates and alignment, the generated
    sets and their speech; the results give each (system, seed) and the mean and spread over seeds."""
    train, nas_val, test, manifest_path, backbone, _ = target_data(target)
    plugged, architecture = fixed_architecture(backbone, choice="adapter", space="NA", adapters=adapters, blocks=blocks)
    metrics, generated = {"no_extra": [], "random": [], "tailored": []}, {"random": [], "tailored": []}
    seeds = seeds or (target.seed,)
    for seed in seeds:
        speech = dict(voices=target.voices, snrs=target.snrs, noise_kinds=noise_kinds, seed=seed)
        train_config_seeded = train_config.step_dict() | {"seed": seed}
        suffix = f"_seed{seed}"
        student, _ = train_architecture(plugged, architecture, train, nas_val, manifest_path, train_config=train_config_seeded, name=f"student_no_extra{suffix}", id=f"train_no_extra{suffix}")
        no_extra, _ = evaluate(student, test, manifest_path, system="no_extra", id=f"evaluate_no_extra{suffix}")
        metrics["no_extra"].append(no_extra)

        policy, _, _ = align_teacher(student, architecture, train, nas_val, test, manifest_path, target.slurp_jsonl, arte_config, update_config.step_dict(), preference_pool=preference_pool, id=f"align_teacher{suffix}", **speech)
        for name, teacher_policy in (("random", None), ("tailored", policy)):
            extra, with_extra, _ = generate_examples(train, nas_val, test, manifest_path, target.slurp_jsonl, n_generated, teacher_policy, name=name, data_root=target.data_root, id=f"generate_{name}{suffix}", **speech)
            trained, _ = train_architecture(plugged, architecture, with_extra, nas_val, manifest_path, train_config=train_config_seeded, name=f"student_{name}{suffix}", id=f"train_{name}{suffix}")
            scored, _ = evaluate(trained, test, manifest_path, system=name, id=f"evaluate_{name}{suffix}")
            metrics[name].append(scored)
            generated[name].append(extra)

    arte_results(metrics["no_extra"], metrics["random"], metrics["tailored"], generated["random"], generated["tailored"], seeds=list(seeds))
