from components.adapters.hyperformer.config import HyperformerConfig
from components.adapters.hyperformer.layer import HyperformerMethod

__all__ = ["HyperformerConfig", "HyperformerMethod"]
