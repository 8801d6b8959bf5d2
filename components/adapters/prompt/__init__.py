from components.adapters.prompt.config import PromptConfig
from components.adapters.prompt.layer import PromptLayer, task_rows

__all__ = ["PromptConfig", "PromptLayer", "task_rows"]
