import json
from pathlib import Path
from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import log_metadata, step

from components.data.dataset import SpeechDataset
from components.metrics.params import count_parameters
from components.models.cascade import Cascade
from components.nas.cascade import trainable_parameters as nas_trainable_parameters
from components.training.recipes import evaluate_cascade, evaluate_external_asr
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer for Cascade)


@step
def evaluate(
    cascade: Cascade,
    test: pd.DataFrame,
    manifest_path: str,
    system: str,
    mode: str = "e2e",
    trained_modules: Tuple[str, ...] = (),
    lm_text: Optional[str] = None,
) -> Tuple[Annotated[dict, "metrics"], Annotated[str, "predictions"]]:
    """WER/CER and SLURP metrics on the test split; predictions as SLURP-format jsonl (with transcripts).

    trained_modules: the cascade modules the system trained on the target domain (for the
    trainable-parameter count: none for frozen, all four for full fine-tuning). A searched
    cascade counts what its architecture trains instead.
    lm_text: sentences (SLURP's lm.txt) for a lexicon + trigram LM beam search (text mode only).
    """
    beam = None
    if lm_text:
        from components.models.beam import from_text

        beam = from_text(Path(lm_text).read_text().splitlines())
        mode = "text"
    metrics, results = evaluate_cascade(cascade, SpeechDataset(test, Path(manifest_path).parent), mode=mode, beam=beam)
    if beam is not None:
        mode = "text+beam"
    counts = count_parameters(cascade)
    if getattr(cascade, "nas_spec", None):  # a searched cascade knows what its architecture trains
        trainable = nas_trainable_parameters(cascade)
    else:
        trainable = sum(counts["per_module"][m]["total"] for m in trained_modules if m in counts["per_module"])
    metrics = {"system": system, "mode": mode, **metrics, "trainable_parameters": trainable, "total_parameters": counts["total"]}
    log_metadata({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
    lines = [
        json.dumps({"file": p.file, "slurp_id": p.slurp_id, "scenario": p.scenario, "action": p.action, "entities": [{"type": e.type, "filler": e.filler} for e in p.entities], "transcript": t})
        for p, t in results
    ]
    return metrics, "\n".join(lines) + "\n"


@step
def evaluate_pocketsphinx(nlu_source: Cascade, test: pd.DataFrame, manifest_path: str) -> Annotated[dict, "pocketsphinx_metrics"]:
    """The recogniser a user would otherwise pick: pocketsphinx's pre-trained US English model on the
    noisy test audio, its text into the (frozen) NLU of nlu_source. Nothing is trained."""
    from components.models.pocketsphinx_asr import PocketSphinxASR

    asr = PocketSphinxASR()
    metrics, _ = evaluate_external_asr(asr.transcribe_batch, nlu_source, SpeechDataset(test, Path(manifest_path).parent))
    metrics = {"system": "pocketsphinx", "mode": "text", **metrics, "trainable_parameters": 0, "total_parameters": count_parameters(nlu_source.nlu)["total"]}
    log_metadata({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
    return metrics
