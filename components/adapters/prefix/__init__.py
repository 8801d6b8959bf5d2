from components.adapters.prefix.config import PrefixConfig
from components.adapters.prefix.layer import PrefixAttentionLayer, PrefixLayer, PrefixSelfAttentionLayer

__all__ = ["PrefixAttentionLayer", "PrefixConfig", "PrefixLayer", "PrefixSelfAttentionLayer"]
