from components.adapters.poly.config import MhrConfig, MhrMuConfig, MhrZConfig, PolyConfig
from components.adapters.poly.layer import MhrMuLayer, PolyLayer, average_inventory, mixing_weights

__all__ = ["MhrConfig", "MhrMuConfig", "MhrMuLayer", "MhrZConfig", "PolyConfig", "PolyLayer", "average_inventory", "mixing_weights"]
