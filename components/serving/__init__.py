"""Serving the winning adapters: request audio, adaptive batching, and a runtime that holds one backbone
with every task's adapter. The BentoML service (service.py) wires them to HTTP; this package's other
modules are plain Python and torch.

Names load on first use (PEP 562): `transcribe` needs audio.py alone, and the runtime's imports (the
multi-task and training stacks) would add seconds to its start-up."""

from importlib import import_module

_MODULE_OF = {
    "SAMPLE_RATE": "audio", "AudioLimits": "audio", "RequestError": "audio", "decode_audio": "audio", "read_audio": "audio", "to_model_rate": "audio",
    "MicroBatcher": "batcher", "QueueFull": "batcher",
    "ADAPTERS_DIR": "runtime", "CASCADE_DIR": "runtime", "TaskRuntime": "runtime", "write_service_model": "runtime",
}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
