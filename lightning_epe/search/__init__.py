"""Search over candidate spaces: strategies, the results store and the ArchitectureSearch loop."""
from .leaderboard import Leaderboard, TensorBatch, rank
from .lock import DirectoryLock, ResultsDirectoryBusy
from .loop import SearchLoop, SearchResult
from .search import ArchitectureSearch
from .shortlist import Shortlist
from .store import ConfigMismatchError, MemoryStore, ResultsStore
from .strategies import (
                         ExhaustiveSearch,
                         RandomSearch,
                         RegularizedEvolution,
                         Strategy,
                         get_strategy,
                         list_strategies,
                         make_strategy,
                         register_strategy,
)

__all__ = [
    "ArchitectureSearch", "ConfigMismatchError", "DirectoryLock", "ExhaustiveSearch", "Leaderboard", "MemoryStore",
    "RandomSearch", "RegularizedEvolution", "ResultsDirectoryBusy", "ResultsStore", "SearchLoop", "SearchResult",
    "Shortlist", "Strategy",
    "TensorBatch", "get_strategy", "list_strategies", "make_strategy", "rank", "register_strategy",
]
