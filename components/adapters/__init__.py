"""Parameter-efficient adapters for any torch module tree, multi-task.

    from components import adapters
    method = adapters.add_adapter(model, adapters.LoraConfig(target_modules=["asr:@attention"]), name="lora", tasks=["slurp"])
    adapters.freeze_backbone(model)
    method.set_task("slurp")                       # or task ids (B,) for a mixed batch
    adapters.save_task(model, "slurp.safetensors", "slurp", name="lora")

One folder a method (config.py + layer.py), registered by name in
``registry.METHODS``; ``python -m components.adapters`` lists them with
every config field.
"""

from components.adapters import bitfit, bottleneck, compacter, hra, hyperformer, lora, poly, prefix, prompt  # noqa: F401  (registers the methods)
from components.adapters.accounting import adapter_report
from components.adapters.base import AdapterLayer, AdapterMethod
from components.adapters.bitfit import BitFitConfig
from components.adapters.bottleneck import BottleneckConfig, GatedConfig, HoulsbyConfig, PfeifferConfig, SharedConfig
from components.adapters.compacter import CompacterConfig
from components.adapters.config import AdapterConfig, describe
from components.adapters.hra import HRAConfig
from components.adapters.hyperformer import HyperformerConfig
from components.adapters.inject import add_adapter, find_targets, freeze_backbone, frozen_norm_statistics, get_adapter, remove_adapter
from components.adapters.lora import LoraConfig, merge_and_unload
from components.adapters.poly import MhrConfig, MhrMuConfig, MhrZConfig, PolyConfig, average_inventory
from components.adapters.prefix import PrefixConfig
from components.adapters.prompt import PromptConfig
from components.adapters.registry import METHODS, RegistryError, config_class, register
from components.adapters.state import config_from_file, load_shared, load_task, save_shared, save_task

__all__ = [
    "METHODS", "AdapterConfig", "AdapterLayer", "AdapterMethod", "BitFitConfig", "BottleneckConfig", "CompacterConfig", "GatedConfig",
    "HRAConfig", "HoulsbyConfig", "HyperformerConfig", "LoraConfig", "MhrConfig", "MhrMuConfig", "MhrZConfig", "PfeifferConfig", "PolyConfig", "PrefixConfig", "PromptConfig", "RegistryError", "SharedConfig", "add_adapter", "adapter_report", "average_inventory",
    "config_class", "config_from_file", "describe", "find_targets", "freeze_backbone", "frozen_norm_statistics", "get_adapter", "load_shared",
    "load_task", "merge_and_unload", "register", "remove_adapter", "save_shared", "save_task",
]
