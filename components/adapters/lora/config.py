from __future__ import annotations

from dataclasses import dataclass

from components.adapters.config import AdapterConfig, help_field


@dataclass
class LoraConfig(AdapterConfig):
    """LoRA: W x + (alpha / r) * B A x with A (r, in) Kaiming-uniform and B (out, r) zero; mergeable into W."""

    method = "lora"
    target_modules: list[str] = help_field(
        ["@attention"], "Linear layers to adapt; a container (an attention block, an FFN) means every Linear in it; MultiheadAttention gets q, k, v and out."
    )
    r: int = help_field(8, "Rank of the update.")
    alpha: float = help_field(16.0, "Scale numerator: the update is multiplied by alpha / r.")
    dropout: float = help_field(0.0, "Dropout on the LoRA branch's input.")
