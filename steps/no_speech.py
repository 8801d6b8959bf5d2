"""The cascade's no-speech probe: fitted on the training commands and synthesized non-speech, calibrated
on nas_val, saved inside the cascade that the task adapters then train on and the service serves."""

from pathlib import Path
from typing import Annotated, Tuple

import pandas as pd
from tqdm.auto import tqdm
from zenml import ArtifactConfig, log_metadata, step
from zenml.enums import ArtifactType
from zenml.types import HTMLString

from components.data.dataset import SpeechDataset
from components.models.cascade import Cascade
from components.models.whisper.model import NO_SPEECH_THRESHOLD
from components.no_speech import fit_no_speech_probe, probe_clip_sets
from steps.materializers import CascadeMaterializer  # noqa: F401  (registers the materializer)


@step
def fit_no_speech(
    cascade: Cascade, train: pd.DataFrame, nas_val: pd.DataFrame, manifest_path: str, max_false_rejection: float = 0.01, max_train_clips: int = 800, nonspeech_per_kind: int = 8,
) -> Tuple[Annotated[Cascade, ArtifactConfig(name="cascade_with_no_speech_probe", artifact_type=ArtifactType.MODEL)], Annotated[HTMLString, "no_speech_report"]]:
    """A probe that tells the cascade's ASR that nobody spoke (components/no_speech.py): fitted on up to
    ``max_train_clips`` training commands against ``nonspeech_per_kind`` synthesized clips of each kind and
    level, calibrated so that the serving threshold rejects at most ``max_false_rejection`` of the nas_val
    commands. A backbone without a no-speech decision passes unchanged."""
    if "no_speech_threshold" not in cascade.asr.runtime_options:
        log_metadata({"no_speech_probe": False})
        return cascade, HTMLString(f"<p>the {cascade.asr.kind} backbone has no no-speech decision: no probe</p>")
    root = Path(manifest_path).parent
    sets = probe_clip_sets(SpeechDataset(train, root), SpeechDataset(nas_val, root), max_train_clips, nonspeech_per_kind)
    with tqdm(total=sum(map(len, sets.values())), desc="no-speech probe", unit="clip") as bar:
        probe, report = fit_no_speech_probe(**sets, max_false_rejection=max_false_rejection, threshold=NO_SPEECH_THRESHOLD, progress=bar.update)
    cascade.set_no_speech_probe(probe)
    log_metadata({"no_speech_probe": report})
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in report.items())
    return cascade, HTMLString(f"<h3>No-speech probe</h3><table>{rows}</table>")
