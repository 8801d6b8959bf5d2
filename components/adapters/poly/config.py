from __future__ import annotations

from dataclasses import dataclass

from components.adapters.config import AdapterConfig, help_field
from components.adapters.lora.config import LoraConfig


@dataclass
class PolyConfig(AdapterConfig):
    """Polytropon: per layer an inventory of n_skills LoRAs shared by all tasks, mixed by per-task routing logits (a task adds only those)."""

    method = "poly"
    target_modules: list[str] = help_field(
        ["@attention"], "Linear layers to adapt; a container (an attention block, an FFN) means every Linear in it; MultiheadAttention gets q, k, v and out."
    )
    r: int = help_field(8, "Rank of each skill's LoRA; the mixed update is x A_mix B_mix / r (no alpha).")
    n_skills: int = help_field(4, "LoRA skills in each layer's inventory (shared by all tasks; B starts at zero, so the adapter starts as a no-op).")
    n_splits: int = help_field(
        1, "Routing heads: A and B are cut into n_splits blocks along in/out features, each mixed with its own weights (>1 is Multi-Head Routing); features must be divisible."
    )
    temperature: float = help_field(1.0, "Relaxed-Bernoulli temperature of the routing sample drawn per batch row in training (Poly/peft: 1.0); eval uses sigmoid(logits).")

    def validate(self) -> None:
        super().validate()
        if not self.temperature > 0:
            raise ValueError(f"{type(self).__name__}.temperature must be > 0, got {self.temperature!r}")


@dataclass
class MhrConfig(PolyConfig):
    """Multi-Head Routing: Poly whose skills are routed per block of features (n_splits heads)."""

    method = "mhr"
    n_splits: int = help_field(
        8, "Routing heads: A and B are cut into n_splits blocks along in/out features, each mixed with its own weights; in and out features must be divisible."
    )


@dataclass
class MhrZConfig(MhrConfig):
    """MHR-z: only the per-task routing trains, the skill inventory stays frozen (load a trained poly/mhr inventory with load_shared)."""

    method = "mhr_z"


@dataclass
class MhrMuConfig(LoraConfig):
    """MHR-mu: one LoRA per task, every task starting from the skill inventory averaged per split (build it with poly.average_inventory)."""

    method = "mhr_mu"
    target_modules: list[str] = help_field(
        ["@attention"],
        "Linear layers to adapt (average_inventory uses the source adapter's); a container means every Linear in it; MultiheadAttention gets q, k, v and out.",
    )
    r: int = help_field(8, "Rank of each task's LoRA (average_inventory takes the source adapter's r).")
    alpha: float = help_field(1.0, "Scale numerator: the update is x A B * alpha / r; 1.0 is Poly/MHR's 1/r, so the averaged adapter starts exactly where the inventory was.")
    dropout: float = help_field(0.0, "Dropout on the LoRA branch's input.")
