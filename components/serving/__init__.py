"""Serving the winning adapters: request audio, adaptive batching, and a runtime that holds one backbone
with every task's adapter. The BentoML service (service.py) wires them to HTTP; this package's other
modules are plain Python and torch."""

from components.serving.audio import SAMPLE_RATE, AudioLimits, RequestError, decode_audio, read_audio, to_model_rate
from components.serving.batcher import MicroBatcher, QueueFull
from components.serving.runtime import ADAPTERS_DIR, CASCADE_DIR, TaskRuntime, write_service_model

__all__ = [
    "ADAPTERS_DIR", "CASCADE_DIR", "SAMPLE_RATE", "AudioLimits", "MicroBatcher", "QueueFull", "RequestError", "TaskRuntime", "decode_audio",
    "read_audio", "to_model_rate", "write_service_model",
]
