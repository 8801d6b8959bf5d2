from components.adapters.bitfit.config import BitFitConfig
from components.adapters.bitfit.layer import BiasOffsetLayer

__all__ = ["BiasOffsetLayer", "BitFitConfig"]
