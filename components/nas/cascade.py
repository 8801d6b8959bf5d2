"""Choice cells on the SE -> ASR -> NLU cascade: one cell a module (or a block), each with its adapter.

    cells = attach_cells(cascade, space="NFA")          # cascade.se / .asr / .nlu become ChoiceCells
    cells = attach_cells(cascade, "NFA", blocks=["nlu"])  # or: one cell per MiniLM layer ("nlu.0" ... "nlu.5")
    arch = Architecture(cells, frozen_cost=0.0)
    search(cascade, arch, cascade_loss, train, nas_val, SearchConfig(...), collate_fn=collate, extra=bridge)

The adapter of each module comes from ``adapters`` ({module: {"method": name, field: value}}),
defaulting to DEFAULT_ADAPTERS. The bridge (ASR states -> MiniLM embeddings) is searched like a
module when ``modules`` names it; otherwise it always trains: it is the cascade's own glue, tiny, and
the target domain moves its input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from components.adapters import config_class
from components.adapters.attention import set_submodule
from components.adapters.inject import find_targets
from components.models.cascade import Cascade
from components.nas.cell import SEARCH_SPACES, ChoiceCell

DEFAULT_ADAPTERS: dict[str, dict] = {
    "se": {"method": "pfeiffer", "target_modules": ["@ffn"], "reduction_factor": 16},  # after the mask projection
    "asr": {"method": "houlsby", "target_modules": ["@attention", "@ffn"], "reduction_factor": 16},
    "nlu": {"method": "pfeiffer", "target_modules": ["@ffn"], "reduction_factor": 16},
    # the bridge is a bare Linear, adapted from the cascade (its parent): targets are cascade paths
    "bridge": {"method": "lora", "target_modules": ["bridge"], "r": 8},
}
SEARCHED_MODULES = ("se", "asr", "nlu")  # the default; "bridge" may join them


def attach_cells(
    cascade: Cascade,
    space: str = "NFA",
    adapters: Mapping[str, dict] | None = None,
    modules: Sequence[str] = SEARCHED_MODULES,
    blocks: Sequence[str] = (),
) -> dict[str, ChoiceCell]:
    """Replace each module by a ChoiceCell over ``SEARCH_SPACES[space]``; returns {name: cell}.

    A module named in ``blocks`` gets one cell per block instead (its backbone's '@layer' role:
    Conformer layers, BERT layers), named "asr.0", "asr.1", ...; its other parameters (front end,
    embeddings, heads) stay frozen. Each block's adapter is the module's adapter narrowed to the block.
    """
    if space not in SEARCH_SPACES:
        raise ValueError(f"unknown search space {space!r}; use one of {sorted(SEARCH_SPACES)}")
    if set(modules) - set(DEFAULT_ADAPTERS):
        raise ValueError(f"modules {sorted(set(modules) - set(DEFAULT_ADAPTERS))} are not cascade modules; use some of {list(DEFAULT_ADAPTERS)}")
    unknown = sorted(set(blocks) - set(modules))
    if unknown:
        raise ValueError(f"blocks {unknown} are not among the searched modules {list(modules)}")
    specs = {**DEFAULT_ADAPTERS, **(adapters or {})}
    cascade.nas_spec = {"space": space, "adapters": {m: specs[m] for m in modules}, "modules": list(modules), "blocks": list(blocks)}  # for save_cascade
    candidates = SEARCH_SPACES[space]
    cells = {}
    for name in modules:
        module = getattr(cascade, name, None)
        if module is None:
            continue  # a cascade without SE
        if isinstance(module, ChoiceCell) or find_cells(module):
            raise ValueError(f"cascade.{name} already has choice cells")
        spec = dict(specs[name])
        config = config_class(spec.pop("method")).from_dict(spec) if "adapter" in candidates else None
        if name not in blocks:
            if name == "bridge":  # a Linear cannot wrap itself: its adapter comes from the parent
                cells[name] = ChoiceCell(module, candidates, config, adapter_root=cascade, adapter_name="nas_bridge")
            else:
                cells[name] = ChoiceCell(module, candidates, config)
            setattr(cascade, name, cells[name])
            continue
        for i, (path, block) in enumerate(find_targets(module, ["@layer"])):
            cell = ChoiceCell(block, candidates, config, adapter_root=module, adapter_name=f"nas_{i}")
            set_submodule(module, path, cell)
            cells[f"{name}.{i}"] = cell
    for label, cell in cells.items():
        cell.label = label
    return cells


def find_cells(model: nn.Module) -> dict[str, ChoiceCell]:
    """{label: cell} of the choice cells inside ``model``, in model order."""
    return {m.label: m for m in model.modules() if isinstance(m, ChoiceCell)}


def glue_parameters(cascade: Cascade) -> list[nn.Parameter]:
    """Parameters that train in every system: the bridge, unless it is searched as a cell."""
    return [] if isinstance(cascade.bridge, ChoiceCell) else list(cascade.bridge.parameters())


def cells_config(cascade: Cascade) -> dict | None:
    """What save_cascade records to rebuild the cells: how they were attached and each one's fixed choice."""
    spec = getattr(cascade, "nas_spec", None)
    if spec is None:
        return None
    fixed = {label: cell.candidates[cell.fixed] if cell.mode == "fixed" else None for label, cell in find_cells(cascade).items()}
    return {**spec, "fixed": fixed}


def restore_cells(cascade: Cascade, config: dict) -> None:
    """attach_cells as recorded by cells_config (before loading the weights), then each cell's fixed choice."""
    cells = attach_cells(cascade, config["space"], config["adapters"], config["modules"], config.get("blocks", ()))
    for label, choice in config["fixed"].items():
        if choice is not None:
            cells[label].mode, cells[label].fixed = "fixed", cells[label].candidates.index(choice)


def trainable_parameters(cascade: Cascade) -> int:
    """What the cascade's fixed architecture trains: each cell's chosen candidate, plus the glue."""
    total = sum(p.numel() for p in glue_parameters(cascade))
    for label, cell in find_cells(cascade).items():
        if cell.mode != "fixed":
            raise ValueError(f"cell {label} has no fixed architecture yet (mode {cell.mode!r})")
        total += sum(p.numel() for p in cell.candidate_parameters()[cell.candidates[cell.fixed]])
    return total
