from __future__ import annotations

from dataclasses import dataclass

from components.adapters.config import AdapterConfig, help_field


@dataclass
class BitFitConfig(AdapterConfig):
    """BitFit: tune only the biases, as per-task bias offsets (zero-init) so tasks never touch the backbone's own."""

    method = "bitfit"
    target_modules: list[str] = help_field(
        ["@encoder"], "Sub-trees whose biases tune: every Linear, Conv1d/2d, LayerNorm, BatchNorm and attention projection with a bias inside them."
    )
