"""Neural architecture search over the cascade: per module (or block) frozen, adapter or fine-tune."""

from components.nas.architecture import Architecture, temperature
from components.nas.cell import CANDIDATES, SEARCH_SPACES, ChoiceCell

__all__ = ["CANDIDATES", "SEARCH_SPACES", "Architecture", "ChoiceCell", "temperature"]
