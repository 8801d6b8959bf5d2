from __future__ import annotations

from dataclasses import dataclass

from components.adapters.bottleneck.config import BottleneckConfig
from components.adapters.config import help_field


@dataclass
class CompacterConfig(BottleneckConfig):
    """Compacter: a bottleneck adapter whose projections are PHM layers W = sum_i A_i kron B_i, the A_i shared by every layer."""

    method = "compacter"
    phm_dim: int = help_field(4, "n: number of Kronecker terms and size of each shared A_i (n, n); must divide the module width and the bottleneck width.")
    low_rank: int = help_field(1, "Rank of each per-layer B_i = s_i t_i^T (Compacter: 1); 0 = full B_i (PHM-Adapter).")
    share_phm_rule: bool = help_field(True, "One set of A_i for all tasks (True) or one set per task, still shared by all of that task's layers (False).")

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        if not isinstance(self.phm_dim, int) or self.phm_dim <= 0:
            raise ValueError(f"{name}.phm_dim must be a positive int, got {self.phm_dim!r}")
        if not isinstance(self.low_rank, int) or self.low_rank < 0:
            raise ValueError(f"{name}.low_rank must be an int >= 0 (0 = full-rank B_i), got {self.low_rank!r}")
        if self.share_across_tasks and not self.share_phm_rule:
            raise ValueError(f"{name}: share_across_tasks=True (one adapter for all tasks) needs share_phm_rule=True")
