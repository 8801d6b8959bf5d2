"""Packaging the promoted adapters as a BentoML service: the service model, the bento, a local smoke test."""

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
from zenml import log_metadata, step
from zenml.client import Client

from components.data.noise import white
from components.data.nonspeech import at_level
from components.metrics.asr import wer
from components.multitask import TaskAdapters
from components.serving.local import serve_locally, synthesize_request, wav_bytes
from components.serving.package import build_bento, save_service_model
from steps.materializers import TaskAdaptersMaterializer  # noqa: F401  (registers the materializer)


@step(enable_cache=False)  # writes to the BentoML stores, outside the artifact store
def package_service_model(adapters: TaskAdapters, model_name: str, model_version: int) -> Annotated[str, "service_model_tag"]:
    """The adapters and the backbone they adapt as one model in the BentoML model store."""
    backbone = Client().get_artifact_version(adapters.backbone).load()
    tag = save_service_model(backbone, adapters, metadata={"zenml_model": model_name, "zenml_version": model_version})
    print(f"service model {tag}: {adapters.system}, {len(adapters.tasks)} tasks", flush=True)
    return tag


@step(enable_cache=False)  # writes to the BentoML stores, outside the artifact store
def build_service_bento(service_model_tag: str, args: Optional[dict] = None) -> Annotated[str, "bento_tag"]:
    """``bentoml build`` offline around the service model; the tag is logged on the model version."""
    tag = build_bento(service_model_tag, args=args)
    log_metadata({"serving": {"bento_tag": tag, "service_model_tag": service_model_tag}}, infer_model=True)
    print(f"bento {tag}: serve it with `bentoml serve {tag}`", flush=True)
    return tag


@step(enable_cache=False)  # writes to the BentoML stores, outside the artifact store
def smoke_test_bento(
    bento_tag: str, adapters: TaskAdapters, port: int = 3000, text: str = "turn on the lights in the kitchen", intent: str = "iot_hue_lighton"
) -> Annotated[dict, "smoke_test"]:
    """Serve the bento on 127.0.0.1, send one synthesized utterance of ``text`` for every task, stop the server;
    score each answer against what was said: the transcript's WER and whether the intent is ``intent``.
    Then 2 s of silence and of white noise (-40 dBFS) to the first task: ``speech`` false is the right answer."""
    with tempfile.TemporaryDirectory() as tmp:
        audio = synthesize_request(text, Path(tmp) / "request.flac")
        nobody = {name: wav_bytes(wave) for name, wave in (("silence", np.zeros(32000, np.float32)), ("noise", at_level(white(32000, np.random.default_rng(0)), -40.0)))}
        with serve_locally(bento_tag, port) as client:
            listed = client.tasks()
            if sorted(listed["tasks"]) != sorted(adapters.tasks):
                raise RuntimeError(f"bento {bento_tag} serves tasks {listed['tasks']}, the adapters have {adapters.tasks}")
            start = time.perf_counter()
            replies = {task: client.transcribe(audio, task) for task in adapters.tasks}
            seconds = time.perf_counter() - start
            no_speech = {name: client.transcribe(clip, adapters.tasks[0]) for name, clip in nobody.items()}
    wers = [wer([text], [reply["transcript"]]) for reply in replies.values()]
    report = {"bento_tag": bento_tag, "tasks": len(replies), "text": text, "intent": intent, "mean_latency_ms": round(1000 * seconds / len(replies), 1),
              "mean_wer": round(sum(wers) / len(wers), 4), "exact_transcripts": sum(w == 0 for w in wers),
              "correct_intents": sum(reply["intent"] == intent for reply in replies.values()), "example": next(iter(replies.values())),
              "no_speech": {name: {"speech": reply["speech"], "intent": reply["intent"]} for name, reply in no_speech.items()}}
    log_metadata({"serving": {"smoke_test": report}}, infer_model=True)
    print("smoke test:", json.dumps(report), flush=True)
    return report
