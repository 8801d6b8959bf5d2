from __future__ import annotations

from dataclasses import dataclass

from components.adapters.config import AdapterConfig, help_field

HEADS = ("linear", "ffn")


@dataclass
class HRAConfig(AdapterConfig):
    """Hierarchical Recurrent Adapter (arXiv 2403.19709): one IndRNN controller over depth shared by all layers and tasks, a small head per task.

    Not peft's ``HRA`` (Householder reflection adaptation), which is a different method.
    """

    method = "hra"
    target_modules: list[str] = help_field(["@layer"], "Modules whose outputs the controller reads and the heads adapt, in depth order (default: each block).")
    r: int = help_field(64, "Controller width: the IndRNN state h_l has r units (W: r x d, u and b: r).")
    head: str = help_field("linear", "Per-task head mapping h_l to the residual: 'linear' (r -> d) or 'ffn' (r -> ffn_dim -> d, ReLU).")
    ffn_dim: int = help_field(128, "Hidden width of an 'ffn' head (unused by 'linear').")

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        if self.head not in HEADS:
            raise ValueError(f"{name}.head must be one of {HEADS}, got {self.head!r}")
        if not isinstance(self.ffn_dim, int) or self.ffn_dim <= 0:
            raise ValueError(f"{name}.ffn_dim must be a positive int, got {self.ffn_dim!r}")
