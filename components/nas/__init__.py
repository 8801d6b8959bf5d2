"""Neural architecture search over the cascade: per module (or block) frozen, adapter or fine-tune."""

from components.nas.architecture import Architecture, temperature
from components.nas.cascade import DEFAULT_ADAPTERS, attach_cells, glue_parameters
from components.nas.cell import CANDIDATES, SEARCH_SPACES, ChoiceCell
from components.nas.search import SearchConfig, SearchResult, search, train_derived

__all__ = ["CANDIDATES", "DEFAULT_ADAPTERS", "SEARCH_SPACES", "attach_cells", "glue_parameters", "Architecture", "ChoiceCell", "SearchConfig", "SearchResult", "search", "temperature", "train_derived"]
