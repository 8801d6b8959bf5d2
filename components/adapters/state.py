"""Save and load one task's adapter, or an adapter's shared part, as safetensors.

A task file holds only that task's tensors (keys '<layer path>|<name>', '*'
for method-level ones) plus metadata: format, method, config (JSON), task.
Loading a task the adapter does not have yet adds it first, so a service can
pull tasks in one by one without reloading the backbone. No pickle anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from components.adapters.base import AdapterMethod
from components.adapters.config import AdapterConfig
from components.adapters.inject import get_adapter
from components.adapters.registry import config_class
from components.data.atomic import atomic_path

FORMAT = "cascadapt-adapter/1"
METHOD_LEVEL = "*"


def task_state(method: AdapterMethod, task: str) -> dict[str, torch.Tensor]:
    """Every tensor of ``task``: method-level and per layer."""
    method.router.id(task)
    state = {}
    if task in method.tasks:
        state |= {f"{METHOD_LEVEL}|{k}": v for k, v in method.tasks[task].state_dict().items()}
    for path, layer in method.layers.items():
        state |= {f"{path}|{k}": v for k, v in layer.tasks[task].state_dict().items()}
    return state


def shared_state(method: AdapterMethod) -> dict[str, torch.Tensor]:
    """Every tensor the tasks share: the method's ``shared`` and each layer's own (not base, not per task)."""
    state = {f"{METHOD_LEVEL}|{k}": v for k, v in method.shared.state_dict().items()}
    for path, layer in method.layers.items():
        state |= {f"{path}|{k}": v for k, v in layer.state_dict().items() if not k.startswith(("base.", "tasks."))}
    return state


def save_task(model: nn.Module, path: str | Path, task: str, name: str = "default") -> Path:
    method = get_adapter(model, name)
    return _save(task_state(method, task), path, method, {"kind": "task", "task": task})


def save_shared(model: nn.Module, path: str | Path, name: str = "default") -> Path:
    method = get_adapter(model, name)
    return _save(shared_state(method), path, method, {"kind": "shared"})


def load_task(model: nn.Module, path: str | Path, name: str = "default", task: str | None = None) -> str:
    """Load a task file into adapter ``name`` (as ``task``, default: the saved name); returns the task name."""
    method = get_adapter(model, name)
    meta = _check(read_metadata(path), path, method, "task")
    task = task or meta["task"]
    if task not in method.router.names:
        method.add_task(task)
    _copy_into(task_state(method, task), path)
    return task


def load_shared(model: nn.Module, path: str | Path, name: str = "default") -> None:
    """Load a save_shared file into adapter ``name``: same method, or one of its family (an mhr inventory into mhr_z)."""
    method = get_adapter(model, name)
    _check(read_metadata(path), path, method, "shared")
    _copy_into(shared_state(method), path)


def read_metadata(path: str | Path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a cascadapt adapter file (format {meta.get('format')!r}, expected {FORMAT!r})")
    return meta


def config_from_file(path: str | Path) -> AdapterConfig:
    """The config an adapter file was saved with: add_adapter(model, config_from_file(f)) rebuilds its shape."""
    meta = read_metadata(path)
    config = json.loads(meta["config"])
    return config_class(config["method"]).from_dict(config)


def _save(state: dict[str, torch.Tensor], path: str | Path, method: AdapterMethod, extra: dict) -> Path:
    path = Path(path)
    meta = {"format": FORMAT, "method": method.config.method, "family": method.family or "", "config": method.config.to_json(), **extra}
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp), metadata=meta)
    return path


def _check(meta: dict, path, method: AdapterMethod, kind: str) -> dict:
    if meta.get("kind") != kind:
        raise ValueError(f"{path}: holds a {meta.get('kind')!r} state, expected {kind!r}")
    same_family = kind == "shared" and method.family is not None and meta.get("family") == method.family
    if meta.get("method") != method.config.method and not same_family:
        raise ValueError(f"{path}: saved from method {meta.get('method')!r}, adapter {method.adapter_name!r} is {method.config.method!r}")
    return meta


def _copy_into(expected: dict[str, torch.Tensor], path) -> None:
    """Copy every tensor of the file into ``expected`` (live tensors); the key sets and shapes must agree."""
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
        if missing or unexpected:
            raise ValueError(f"{path}: does not fit this adapter: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for key, live in expected.items():
            saved = f.get_tensor(key)
            if saved.shape != live.shape:
                raise ValueError(f"{path}: tensor {key!r} has shape {tuple(saved.shape)}, the adapter expects {tuple(live.shape)}")
            with torch.no_grad():
                live.copy_(saved)
