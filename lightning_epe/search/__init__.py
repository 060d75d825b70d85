"""Search over candidate spaces: strategies, the results store and the ArchitectureSearch loop."""
from .search import ArchitectureSearch, SearchResult
from .store import ConfigMismatchError, ResultsStore
from .strategies import STRATEGIES, make_strategy

__all__ = ["ArchitectureSearch", "ConfigMismatchError", "ResultsStore", "STRATEGIES", "SearchResult", "make_strategy"]
