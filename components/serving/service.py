"""The BentoML service: one backbone and every task's adapter from the BentoML model store, behind HTTP.

    bentoml serve components.serving.service:CascadeSLU --arg model=cascadapt_slu:latest
    curl -F audio=@utt.wav -F task=<task> http://127.0.0.1:3000/v1/transcribe

Routes (a Starlette app mounted on the service, so that we own request parsing; BentoML's own file
inputs fetch URLs sent as text and answer malformed multipart with a 500):
    POST /v1/transcribe   multipart: audio (a file), task -> SLURP output and timings; adaptive batching
    GET  /v1/tasks        the loaded tasks, the adapters' system, backbone and digest
BentoML's /livez, /readyz (ready once the model is loaded and warmed up) and /metrics come with it.
Settings are bento arguments (``--arg name=value``), see ServingArgs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, Optional

import bentoml
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

with bentoml.importing():
    import torch

    from components.models.whisper.model import NO_SPEECH_THRESHOLD
    from components.serving.audio import SAMPLE_RATE, AudioLimits, RequestError, read_audio, to_model_rate
    from components.serving.batcher import MicroBatcher, QueueFull
    from components.serving.runtime import TaskRuntime
    from components.serving.torch_thread import run_on_torch_thread, run_on_torch_thread_async


class ServingArgs(BaseModel):
    model: str = Field("cascadapt_slu:latest", description="BentoML model tag of the service model (package_service_model writes it)")
    batching: bool = Field(True, description="adaptive batching; false runs each request alone")
    max_batch_size: int = Field(16, ge=1)
    max_wait_ms: float = Field(0.0, ge=0, description="hold a short batch back this long for more requests")
    max_queue: int = Field(256, ge=1, description="waiting requests beyond this get a 503")
    max_seconds: float = Field(30.0, gt=0, description="longest audio accepted (Whisper transcribes a clip longer than its window in windows)")
    max_bytes: int = Field(10_000_000, gt=0, description="largest upload accepted")
    device: str = Field("auto", description="auto: CUDA when present")
    threads: int = Field(0, ge=0, description="torch intra-op threads; 0 keeps torch's default")
    mode: Literal["e2e", "text"] = Field("e2e", description="e2e: the NLU reads the 1-best through the bridge; text: the ASR's 1-best text alone")
    max_resident_tasks: Optional[int] = Field(
        None, ge=1, description="tasks whose adapters stay loaded: each loads on its first request, the least recently used is dropped past it; null loads every task at start",
    )
    inference_engine: bool = Field(True, description="run the ASR on its inference-only engine where it has one (Whisper: the plain-torch LeanWhisper; the same outputs)")
    no_speech_threshold: Optional[float] = Field(
        NO_SPEECH_THRESHOLD, gt=0, le=1,
        description="Whisper's no-speech probability above which a request gets speech false and no intent (calibrated: benchmarks/no_speech.py); null answers everything",
    )


ARGS = bentoml.use_arguments(ServingArgs)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def transcribe(request: Request) -> JSONResponse:
    service: CascadeSLU = request.app.state.service
    start = time.perf_counter()
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > ARGS.max_bytes + 65_536:  # a form's own bytes on top
        return error(413, f"request body of {declared} bytes; the limit is {ARGS.max_bytes} bytes of audio")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return error(415, "send multipart/form-data with a file field 'audio' and a text field 'task'")
    try:
        async with request.form(max_files=1, max_fields=8) as form:
            audio, task = form.get("audio"), form.get("task")
            if audio is None or isinstance(audio, str):
                return error(400, "field 'audio' must be a file upload (multipart file part), not " + ("missing" if audio is None else "text"))
            if not isinstance(task, str) or not task:
                return error(400, "field 'task' (the task id, text) is missing")
            data = await audio.read(ARGS.max_bytes + 1)
    except (MultiPartException, HTTPException) as exc:  # starlette raises the latter for a broken body
        return error(400, f"malformed multipart body: {getattr(exc, 'message', None) or exc.detail}")
    try:
        service.runtime.check_task(task)
        samples, rate = read_audio(data, service.limits, name=f"audio {audio.filename or ''}".strip())
    except RequestError as exc:
        return error(exc.status, str(exc))
    decoded = time.perf_counter()
    try:
        if service.batcher is not None:
            result, batch_size = await service.batcher.submit((samples, rate, task))
        else:
            result, batch_size = (await run_on_torch_thread_async(service.predict_batch, [(samples, rate, task)]))[0], 1
    except QueueFull as exc:
        return error(503, f"busy, retry later: {exc}")
    done = time.perf_counter()
    ms = lambda a, b: round(1000 * (b - a), 2)  # noqa: E731
    timings = {"decode_ms": ms(start, decoded), "inference_ms": ms(decoded, done), "total_ms": ms(start, done), "batch_size": batch_size}
    return JSONResponse(result | {"duration_s": round(len(samples) / rate, 3), "timings": timings})


async def tasks(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.service.describe())


http = Starlette(routes=[Route("/transcribe", transcribe, methods=["POST"]), Route("/tasks", tasks, methods=["GET"])])


@bentoml.asgi_app(http, path="/v1")
@bentoml.service(name="cascadapt_slu", workers=1, traffic={"timeout": 120})
class CascadeSLU:
    model = bentoml.models.BentoModel(ARGS.model)

    def __init__(self) -> None:
        if ARGS.threads:
            run_on_torch_thread(torch.set_num_threads, ARGS.threads)
        self.runtime = TaskRuntime.load(Path(self.model.path), device=ARGS.device, mode=ARGS.mode, no_speech_threshold=ARGS.no_speech_threshold,
                                    max_resident_tasks=ARGS.max_resident_tasks, inference_engine=ARGS.inference_engine)
        self.limits = AudioLimits(max_seconds=ARGS.max_seconds, max_bytes=ARGS.max_bytes)  # Whisper cuts longer clips into windows
        batch_on_torch_thread = lambda items: run_on_torch_thread(self.predict_batch, items)  # noqa: E731
        self.batcher = MicroBatcher(batch_on_torch_thread, ARGS.max_batch_size, ARGS.max_wait_ms, ARGS.max_queue) if ARGS.batching else None
        self.runtime.predict([torch.zeros(SAMPLE_RATE)], self.runtime.tasks[:1])  # warm-up before /readyz says ready
        self.ready = True
        http.state.service = self

    def predict_batch(self, items: list[tuple]) -> list[dict]:
        """[(samples, sample rate, task)] -> results; on the torch thread, which also resamples."""
        return self.runtime.predict([to_model_rate(samples, rate) for samples, rate, _ in items], [task for _, _, task in items])

    def describe(self) -> dict:
        bundle = self.runtime.bundle
        return {"model": str(self.model.tag), "system": bundle.system, "backbone": bundle.backbone, "digest": bundle.digest(), "tasks": bundle.tasks,
                "device": str(self.runtime.device), "batching": ARGS.batching, "max_batch_size": ARGS.max_batch_size, "mode": ARGS.mode,
                "no_speech_threshold": self.runtime.no_speech_threshold, "inference_engine": self.runtime.inference_engine,
                "max_resident_tasks": ARGS.max_resident_tasks, "resident_tasks": len(self.runtime.resident_tasks),
                "max_seconds": self.limits.max_seconds}

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.on_shutdown
    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
