from __future__ import annotations

from dataclasses import dataclass

from components.adapters.config import AdapterConfig, help_field


@dataclass
class BottleneckConfig(AdapterConfig):
    """Bottleneck residual adapter: down-project, nonlinearity, up-project (zero-init), added to the module's output."""

    method = "bottleneck"
    target_modules: list[str] = help_field(["@attention", "@ffn"], "Modules after which an adapter goes (default: Houlsby's places).")
    reduction_factor: int = help_field(16, "Bottleneck width = output width / reduction_factor (at least 1).")
    placement: str = help_field("sequential", "'sequential': the adapter reads the module's output; 'parallel': it reads the module's input.")
    residual: bool = help_field(True, "Add the adapter to the module's output (True) or let it replace the output (False, sequential only; not zero-init).")
    activation: str = help_field("relu", "Nonlinearity between the projections: relu, gelu, silu or tanh.")
    gated: bool = help_field(False, "Scale the adapter by a learnt per-task sigmoid gate (starts at 0.5).")
    share_across_tasks: bool = help_field(False, "One adapter for all tasks (VL-adapter's shared adapter); tasks add no parameters.")

    def validate(self) -> None:
        super().validate()
        if self.placement not in ("sequential", "parallel"):
            raise ValueError(f"{type(self).__name__}.placement must be 'sequential' or 'parallel', got {self.placement!r}")
        if not self.residual and self.placement == "parallel":
            raise ValueError(f"{type(self).__name__}: residual=False needs placement='sequential'")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}.activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")


ACTIVATIONS = {"relu": "ReLU", "gelu": "GELU", "silu": "SiLU", "tanh": "Tanh"}


@dataclass
class HoulsbyConfig(BottleneckConfig):
    """Houlsby adapters: after each attention block and each feed-forward block."""

    method = "houlsby"


@dataclass
class PfeifferConfig(BottleneckConfig):
    """Pfeiffer adapters: after each feed-forward block only."""

    method = "pfeiffer"
    target_modules: list[str] = help_field(["@ffn"], "Modules after which an adapter goes (default: Pfeiffer's place, the FFN).")


@dataclass
class GatedConfig(BottleneckConfig):
    """Gated bottleneck adapter: output + sigmoid(g_task) * adapter(output)."""

    method = "gated"
    gated: bool = help_field(True, "Scale the adapter by a learnt per-task sigmoid gate (starts at 0.5).")


@dataclass
class SharedConfig(BottleneckConfig):
    """VL-adapter's shared adapter: one bottleneck adapter per layer used by every task."""

    method = "shared"
    share_across_tasks: bool = help_field(True, "One adapter for all tasks (VL-adapter's shared adapter); tasks add no parameters.")
