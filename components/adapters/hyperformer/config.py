from __future__ import annotations

from dataclasses import dataclass

from components.adapters.bottleneck.config import ACTIVATIONS
from components.adapters.config import AdapterConfig, help_field


@dataclass
class HyperformerConfig(AdapterConfig):
    """Hyperformer: one shared hypernetwork generates every layer's bottleneck adapter from a task embedding and a layer embedding."""

    method = "hyperformer"
    target_modules: list[str] = help_field(["@layer"], "Modules after which a generated adapter goes (default: each block's output).")
    reduction_factor: int = help_field(16, "Generated bottleneck width = module width / reduction_factor (at least 1).")
    activation: str = help_field("relu", "Nonlinearity between the generated projections: relu, gelu, silu or tanh.")
    task_embedding_dim: int = help_field(64, "Size of each task's embedding: the only parameters a new task adds.")
    layer_embedding_dim: int = help_field(64, "Size of the (shared) embedding of each adapted module's position in the target order.")
    projector_hidden: int = help_field(128, "Hidden width of the projector MLP [task emb; layer emb] -> hidden -> projected_dim.")
    projected_dim: int = help_field(64, "Output of the projector: the input of the weight generators (a generator costs projected_dim + 1 per generated weight).")

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        for field in ("task_embedding_dim", "layer_embedding_dim", "projector_hidden", "projected_dim"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}.{field} must be a positive int, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{name}.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
