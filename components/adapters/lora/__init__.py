from components.adapters.lora.config import LoraConfig
from components.adapters.lora.layer import LoraLayer, linear_targets

__all__ = ["LoraConfig", "LoraLayer", "linear_targets"]
