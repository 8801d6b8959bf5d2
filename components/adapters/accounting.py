"""Trainable-parameter accounting per adapter, per module and per task."""

from __future__ import annotations

from torch import nn

from components.adapters.inject import ADAPTERS, adapter_named_parameters
from components.metrics.params import count_parameters


def adapter_report(model: nn.Module) -> dict:
    """{"total", "trainable", "backbone", "adapters": {name: {"method", "total", "trainable", "shared", "tasks": {task: n}, "modules": {path: n}}}}.

    ``shared`` counts what every task uses; ``tasks[t]`` what task t alone adds
    (so a new task costs ``tasks[t]`` more parameters); ``modules`` groups by
    wrapped module path ('*' for the method's own parameters).
    """
    counts = count_parameters(model)
    adapters = {}
    for name, method in getattr(model, ADAPTERS, {}).items():
        params = adapter_named_parameters(model, method)
        entry = {"method": method.config.method, "total": 0, "trainable": 0, "shared": 0, "tasks": {t: 0 for t in method.task_names}, "modules": {}}
        for pname, p in params:
            n = p.numel()
            entry["total"] += n
            entry["trainable"] += n if p.requires_grad else 0
            task = _task_of(pname)
            if task is None:
                entry["shared"] += n
            else:
                entry["tasks"][task] += n
            module = max((path for path in method.layers if pname.startswith(path + ".")), key=len, default="*")
            entry["modules"][module] = entry["modules"].get(module, 0) + n
        adapters[name] = entry
    in_adapters = sum(a["total"] for a in adapters.values())
    return {"total": counts["total"], "trainable": counts["trainable"], "backbone": counts["total"] - in_adapters, "adapters": adapters}


def _task_of(param_name: str) -> str | None:
    parts = param_name.split(".")
    return parts[parts.index("tasks") + 1] if "tasks" in parts else None
