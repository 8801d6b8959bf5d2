from components.adapters.lora.config import LoraConfig
from components.adapters.lora.layer import LoraLayer, linear_targets, merge_and_unload

__all__ = ["LoraConfig", "LoraLayer", "linear_targets", "merge_and_unload"]
