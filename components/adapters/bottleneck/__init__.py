from components.adapters.bottleneck.config import BottleneckConfig, GatedConfig, HoulsbyConfig, PfeifferConfig, SharedConfig
from components.adapters.bottleneck.layer import Bottleneck

__all__ = ["Bottleneck", "BottleneckConfig", "GatedConfig", "HoulsbyConfig", "PfeifferConfig", "SharedConfig"]
