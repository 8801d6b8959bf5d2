from components.adapters.hra.config import HRAConfig
from components.adapters.hra.layer import IndRNNController

__all__ = ["HRAConfig", "IndRNNController"]
