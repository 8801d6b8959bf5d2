"""Parameter accounting for any ``torch.nn.Module``: total, trainable, per module, per task.

Every count is in scalar parameters (``numel``); a parameter is trainable when
``requires_grad``. A tensor registered under several names (tied weights, a
module shared by two parents) is counted once wherever counts are summed.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from torch import nn

__all__ = ["count_parameters", "by_prefix", "parameter_names"]

ROOT = "<root>"  # per_module key for parameters registered on the model itself


def parameter_names(model: nn.Module) -> dict[int, tuple[str, list[str]]]:
    """``{id(param): (param, [every name it is registered under])}``, in registration order.

    The first name is the one ``model.named_parameters()`` reports (it skips
    the aliases of a tied weight).
    """
    out: dict[int, tuple] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        out.setdefault(id(p), (p, []))[1].append(name)
    return out


def _count(params) -> dict[str, int]:
    total = trainable = 0
    for p in params:
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"total": total, "trainable": trainable}


def count_parameters(model: nn.Module) -> dict:
    """``{"total", "trainable", "per_module": {child name: {"total", "trainable"}}}``.

    ``per_module`` is keyed by the model's top-level children (and ``"<root>"``
    for parameters held by the model itself). A tied parameter is attributed
    once, to the child it is first registered under, so ``per_module`` sums to
    the totals; a child whose parameters are all owned elsewhere shows 0.
    """
    per_module: dict[str, list] = {name: [] for name, _ in model.named_children()}
    entries = parameter_names(model).values()
    for p, names in entries:
        head = names[0].split(".", 1)
        owner = head[0] if len(head) == 2 and head[0] in per_module else ROOT
        per_module.setdefault(owner, []).append(p)
    return {
        **_count(p for p, _ in entries),
        "per_module": {name: _count(ps) for name, ps in per_module.items()},
    }


def by_prefix(model: nn.Module, prefixes: Mapping[str, Sequence[str]]) -> dict[str, dict[str, int]]:
    """Counts per named group: ``{group: {"total", "trainable"}}``.

    A parameter belongs to a group when any of its names starts with one of
    the group's prefixes (plain string prefixes, e.g. ``"adapters.task_a."``;
    end a module prefix with ``.`` so ``task_1`` does not catch ``task_10``).
    Within a group each tensor counts once; groups may overlap (a shared
    controller listed under every task is counted in each task's group).
    """
    if isinstance(prefixes, (str, bytes)) or not isinstance(prefixes, Mapping):
        raise TypeError("prefixes must map a group name to a list of name prefixes")
    entries = list(parameter_names(model).values())
    out = {}
    for group, group_prefixes in prefixes.items():
        if isinstance(group_prefixes, str):
            group_prefixes = [group_prefixes]
        chosen = [p for p, names in entries if any(n.startswith(tuple(group_prefixes)) for n in names)]
        out[group] = _count(chosen)
    return out
