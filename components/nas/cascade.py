"""Choice cells on the SE -> ASR -> NLU cascade: one cell a module, each with its adapter.

    cells = attach_cells(cascade, space="NFA")          # cascade.se / .asr / .nlu become ChoiceCells
    arch = Architecture(cells, frozen_cost=0.0)
    search(cascade, arch, cascade_loss, train, nas_val, SearchConfig(...), collate_fn=collate, extra=bridge)

The adapter of each module comes from ``adapters`` ({module: {"method": name, field: value}}),
defaulting to DEFAULT_ADAPTERS. The bridge (ASR states -> MiniLM embeddings) always trains:
it is the cascade's own glue, tiny, and the target domain moves its input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from components.adapters import config_class
from components.models.cascade import Cascade
from components.nas.cell import SEARCH_SPACES, ChoiceCell

DEFAULT_ADAPTERS: dict[str, dict] = {
    "se": {"method": "pfeiffer", "target_modules": ["@ffn"], "reduction_factor": 16},  # after the mask projection
    "asr": {"method": "houlsby", "target_modules": ["@attention", "@ffn"], "reduction_factor": 16},
    "nlu": {"method": "pfeiffer", "target_modules": ["@ffn"], "reduction_factor": 16},
}


def attach_cells(
    cascade: Cascade, space: str = "NFA", adapters: Mapping[str, dict] | None = None, modules: Sequence[str] = ("se", "asr", "nlu")
) -> dict[str, ChoiceCell]:
    """Replace each module by a ChoiceCell over ``SEARCH_SPACES[space]``; returns {module: cell}."""
    if space not in SEARCH_SPACES:
        raise ValueError(f"unknown search space {space!r}; use one of {sorted(SEARCH_SPACES)}")
    specs = {**DEFAULT_ADAPTERS, **(adapters or {})}
    cascade.nas_spec = {"space": space, "adapters": {m: specs[m] for m in modules}, "modules": list(modules)}  # for save_cascade
    cells = {}
    for name in modules:
        base = getattr(cascade, name, None)
        if base is None:
            continue  # a cascade without SE
        if isinstance(base, ChoiceCell):
            raise ValueError(f"cascade.{name} already is a choice cell")
        spec = dict(specs[name])
        config = config_class(spec.pop("method")).from_dict(spec)
        cells[name] = ChoiceCell(base, SEARCH_SPACES[space], config if "adapter" in SEARCH_SPACES[space] else None)
        setattr(cascade, name, cells[name])
    return cells


def glue_parameters(cascade: Cascade) -> list[nn.Parameter]:
    """Parameters that train in every system: the bridge."""
    return list(cascade.bridge.parameters())


def cells_config(cascade: Cascade) -> dict | None:
    """What save_cascade records to rebuild the cells: how they were attached and each one's fixed choice."""
    spec = getattr(cascade, "nas_spec", None)
    if spec is None:
        return None
    fixed = {}
    for name in spec["modules"]:
        cell = getattr(cascade, name, None)
        if isinstance(cell, ChoiceCell):
            fixed[name] = cell.candidates[cell.fixed] if cell.mode == "fixed" else None
    return {**spec, "fixed": fixed}


def restore_cells(cascade: Cascade, config: dict) -> None:
    """attach_cells as recorded by cells_config (before loading the weights), then each cell's fixed choice."""
    cells = attach_cells(cascade, config["space"], config["adapters"], config["modules"])
    for name, choice in config["fixed"].items():
        if choice is not None:
            cells[name].mode, cells[name].fixed = "fixed", cells[name].candidates.index(choice)


def trainable_parameters(cascade: Cascade) -> int:
    """What the cascade's fixed architecture trains: each cell's chosen candidate, plus the glue."""
    total = sum(p.numel() for p in glue_parameters(cascade))
    for name in getattr(cascade, "nas_spec", {}).get("modules", []):
        cell = getattr(cascade, name, None)
        if isinstance(cell, ChoiceCell):
            if cell.mode != "fixed":
                raise ValueError(f"cascade.{name} has no fixed architecture yet (mode {cell.mode!r})")
            total += sum(p.numel() for p in cell.candidate_parameters()[cell.candidates[cell.fixed]])
    return total
