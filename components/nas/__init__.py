"""Neural architecture search over the cascade: per module (or block) frozen, adapter or fine-tune."""

from components.nas.architecture import Architecture, temperature
from components.nas.cell import CANDIDATES, SEARCH_SPACES, ChoiceCell
from components.nas.search import SearchConfig, SearchResult, search, train_derived

__all__ = ["CANDIDATES", "SEARCH_SPACES", "Architecture", "ChoiceCell", "SearchConfig", "SearchResult", "search", "temperature", "train_derived"]
