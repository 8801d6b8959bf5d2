"""ARTE: align the teacher's sampling policy to the student's measured gains, generate training data with
it (or with the uniform policy), and compare the students trained with and without it."""

import html
import os
import tempfile
from pathlib import Path
from typing import Annotated, List, Optional, Tuple

import pandas as pd
import torch
from zenml import log_metadata, step
from zenml.types import HTMLString

from components.arte import ArteConfig, Teacher, fillers_from, tailor, templates_from
from components.arte.plots import policy_shift_html
from components.arte.speech import folder_name, speak, speech_config
from components.arte.student import CascadeStudent
from components.data.corpus import CorpusConfig
from components.data.dataset import SpeechDataset
from components.data.overview import overview_html
from components.data.slurp import read_records
from components.data.speakers import parse_voices
from components.data.validation import validate_frame
from components.models.cascade import Cascade
from components.training.loop import TrainConfig
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer for Cascade)

AUDIO_COLUMNS = ("clean_path", "noisy_path")


def _teacher(slurp_jsonl: str, train: pd.DataFrame, held_out: Tuple[pd.DataFrame, ...], voices: str, snrs: Tuple[float, ...], noise_kinds: Tuple[str, ...], seed: int) -> Tuple[Teacher, CorpusConfig]:
    """The teacher of the train split's records only; no held-out (preference, test) sentence is ever proposed."""
    train_ids = set(train["slurp_id"].astype(int))
    records = [r for r in read_records(slurp_jsonl) if r.slurp_id in train_ids]
    speakers = parse_voices(voices)
    exclude = [text for df in held_out for text in df["text"]]
    teacher = Teacher(templates_from(records), fillers_from(records), [s.id for s in speakers], snrs, noise_kinds, exclude)
    return teacher, speech_config(speakers, snrs, noise_kinds, seed)


@step
def align_teacher(
    student: Cascade,
    architecture: dict,
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    test: pd.DataFrame,
    manifest_path: str,
    slurp_jsonl: str,
    arte_config: dict,
    update_config: dict,
    voices: str = "target",
    snrs: Tuple[float, ...] = (0.0, 5.0, 10.0, 20.0),
    noise_kinds: Tuple[str, ...] = ("white", "pink", "babble"),
    preference_pool: int = 96,
    seed: int = 0,
) -> Tuple[Annotated[dict, "teacher_policy"], Annotated[dict, "arte_history"], Annotated[HTMLString, "policy_shift"]]:
    """ARTE's rounds on ``student`` (trained on the train split): candidate batches from the teacher, spoken
    and tried on copies of the student (``update_config``: a few stage-2 steps), ranked by the drop of its
    NLU loss on ``preference_pool`` utterances of nas_val, the teacher aligned on best vs worst."""
    if nas_val.empty:
        raise ValueError("the nas_val split is empty: ARTE measures the student's gains on nas_val utterances")
    teacher, speech = _teacher(slurp_jsonl, train, (nas_val, test), voices, snrs, noise_kinds, seed)
    preference = nas_val.sample(min(preference_pool, len(nas_val)), random_state=seed).reset_index(drop=True)
    cfg = ArteConfig.from_dict(arte_config)
    before, effective_before = teacher.policy.probabilities(), teacher.policy.effective_choices()

    def on_round(record: dict) -> None:
        gains = record["gains"]
        print(f"[arte] round {record['round']}/{cfg.rounds}: gains {min(gains):+.4f}..{max(gains):+.4f} on {record['items']} items, {record['pairs']} pair(s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="cascadapt-arte-candidates-") as audio_dir:  # candidate audio is thrown away
        update = TrainConfig(**{"progress": False, "patience": None, "seed": seed, **update_config})
        cascade_student = CascadeStudent(architecture["architecture"], SpeechDataset(preference, Path(manifest_path).parent), speech, audio_dir, update)
        history = tailor(teacher, student, cascade_student.update, cascade_student.item_losses, cfg, torch.Generator().manual_seed(seed), on_round)
    after = teacher.policy.probabilities()
    log_metadata({"rounds": len(history), "dropped_templates": len(teacher.dropped), "preference_items": len(preference),
                  "best_gain_per_round": [max(h["gains"]) for h in history], "worst_gain_per_round": [min(h["gains"]) for h in history],
                  "effective_choices_before": effective_before, "effective_choices_after": teacher.policy.effective_choices()})
    summary = {"history": history, "before": before, "after": after, "dropped_templates": [t.source_id for t in teacher.dropped]}
    return {"logits": teacher.policy.logits_dict()}, summary, HTMLString(policy_shift_html(before, after))


@step
def generate_examples(
    train: pd.DataFrame,
    nas_val: pd.DataFrame,
    test: pd.DataFrame,
    manifest_path: str,
    slurp_jsonl: str,
    n: int,
    policy: Optional[dict] = None,
    name: str = "tailored",
    voices: str = "target",
    snrs: Tuple[float, ...] = (0.0, 5.0, 10.0, 20.0),
    noise_kinds: Tuple[str, ...] = ("white", "pink", "babble"),
    seed: int = 0,
    data_root: str = ".",
) -> Tuple[Annotated[pd.DataFrame, "generated"], Annotated[pd.DataFrame, "train_with_generated"], Annotated[HTMLString, "generated_overview"]]:
    """``n`` spoken examples from the teacher with ``policy`` (align_teacher's; None = uniform, the random
    baseline), validated like the corpus, under data/arte/<name>-<digest>; their manifest rows (paths
    relative to the corpus folder) and the train split with them."""
    if n < 1:
        raise ValueError(f"n (examples to generate) must be at least 1, got {n}")
    teacher, speech = _teacher(slurp_jsonl, train, (nas_val, test), voices, snrs, noise_kinds, seed)
    if policy is not None:
        teacher.policy.load_logits(policy["logits"])
    examples = teacher.propose(n, torch.Generator().manual_seed(seed + 1))  # not the alignment's candidate stream
    out_dir = Path(data_root) / "data" / "arte" / folder_name(name, examples, speech)
    generated = speak(examples, out_dir, speech, progress=True)
    report = validate_frame(generated, out_dir / "manifest.jsonl")
    if not report.ok:
        shown = "\n".join(f"row {f.row} ({f.utt_id}): {f.check}: {f.reason}" for f in report.failures[:10])
        raise ValueError(f"generated set {out_dir} failed validation ({len(report.failures)} problems):\n{shown}")
    corpus_root = Path(manifest_path).parent
    prefix = os.path.relpath(out_dir, corpus_root)
    for column in AUDIO_COLUMNS:
        generated[column] = [f"{prefix}/{path}" for path in generated[column]]
    log_metadata({"name": name, "folder": str(out_dir), "examples": len(generated), "intents": int(generated["intent"].nunique()),
                  "aligned_policy": policy is not None, "top_intents": generated["intent"].value_counts().head(5).to_dict()})
    overview = overview_html(generated, f"generated set {name} ({len(generated)} examples)")
    return generated, pd.concat([train, generated], ignore_index=True), HTMLString(overview)


RESULT_COLUMNS = ["system", "seed", "generated", "intent_acc", "slu_f1", "wer", "cer", "scenario_acc", "action_acc", "entity_f1", "n"]
COMPARED = ("intent_acc", "slu_f1", "wer")


@step
def arte_results(
    no_extra: List[dict], random_extra: List[dict], tailored: List[dict], random_generated: List[pd.DataFrame], tailored_generated: List[pd.DataFrame],
    seeds: List[int],
) -> Tuple[Annotated[pd.DataFrame, "arte_results"], Annotated[pd.DataFrame, "arte_summary"], Annotated[HTMLString, "arte_results_table"]]:
    """One row a (student, seed) on the test split, rates as fractions; the summary: each student's mean and
    spread (sample standard deviation; none for one seed) over the seeds; the view in %, with tailored vs random."""
    rows = []
    for i, seed in enumerate(seeds):
        rows += [r | {"seed": seed, "generated": g} for r, g in ((no_extra[i], 0), (random_extra[i], len(random_generated[i])), (tailored[i], len(tailored_generated[i])))]
    df = pd.DataFrame(rows).reindex(columns=RESULT_COLUMNS)
    grouped = df.groupby("system", sort=False)[list(COMPARED)]
    summary = grouped.mean().add_suffix("_mean").join(grouped.std().add_suffix("_std")).reset_index()
    summary.insert(1, "seeds", len(seeds))
    shown, shown_summary = df.copy(), summary.copy()
    for col in RESULT_COLUMNS[3:-1]:
        shown[col] = (shown[col] * 100).round(2)
    for col in shown_summary.columns[2:]:
        shown_summary[col] = (shown_summary[col] * 100).round(2)
    means = summary.set_index("system")
    gap = {k: float(means.loc["tailored", f"{k}_mean"] - means.loc["random", f"{k}_mean"]) for k in COMPARED}
    log_metadata({"seeds": list(seeds), "tailored_minus_random": gap,
                  **{r["system"]: {k: v for k, v in r.items() if k != "system" and v == v} for r in summary.to_dict("records")}})  # v == v: no NaN (one seed's spread)
    caption = (f"Target-domain test split, rates in %, {len(seeds)} seed(s). Tailored minus random data of the same size, mean over seeds: "
               + ", ".join(f"{k} {100 * v:+.2f}" for k, v in gap.items()) + " points.")
    page = (f"<html><body><h2>Tailored training data (ARTE)</h2><p>{html.escape(caption)}</p><h3>Mean and spread over seeds</h3>"
            f"{shown_summary.to_html(index=False)}<h3>Each seed</h3>{shown.to_html(index=False)}</body></html>")
    return df, summary, HTMLString(page)
