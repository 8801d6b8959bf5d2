from components.adapters.compacter.config import CompacterConfig
from components.adapters.compacter.layer import PHMLinear, kron_sum

__all__ = ["CompacterConfig", "PHMLinear", "kron_sum"]
