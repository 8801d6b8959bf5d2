from __future__ import annotations

from dataclasses import dataclass

from components.adapters.config import AdapterConfig, help_field

HEADS = ("linear", "ffn")
CROSS_STACK = ("reset", "pooled")
CONTROLLERS = ("shared", "per_stack")


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
    cross_stack: str = help_field(
        "pooled",
        "How the recurrence enters the next stack (targets that share a parent module form a stack, e.g. Whisper's encoder "
        "layers, then its decoder layers, whose sequences differ in length): 'reset' starts it at zero; 'pooled' starts "
        "it from the previous stack's last state averaged over positions (B, 1, r), kept for every later pass of the "
        "next stack (each decoding step).",
    )
    controller: str = help_field("shared", "'shared': one controller for every stack (the paper); 'per_stack': one controller a stack (the heads stay one a task).")
    input_norm: bool = help_field(
        False, "Layer-normalise (no parameters) each layer output before the controller reads it: a residual stream's scale grows with depth and a few of its features dominate W x.",
    )

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        for field_name, allowed in (("head", HEADS), ("cross_stack", CROSS_STACK), ("controller", CONTROLLERS)):
            if getattr(self, field_name) not in allowed:
                raise ValueError(f"{name}.{field_name} must be one of {allowed}, got {getattr(self, field_name)!r}")
        if not isinstance(self.ffn_dim, int) or self.ffn_dim <= 0:
            raise ValueError(f"{name}.ffn_dim must be a positive int, got {self.ffn_dim!r}")
