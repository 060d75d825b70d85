"""lightning-epe: training-free neural architecture search (EPE-NAS) for PyTorch Lightning."""
from importlib import import_module

__version__ = "0.2.0.dev0"

# Lightning-dependent names load lazily so that ``lightning_epe.scores``/``spaces`` stay light.
_LAZY = {
    "CandidateModule": "lightning_epe.module",
    "EPEScore": "lightning_epe.callbacks",
    "ArchitectureSearch": "lightning_epe.search",
    "rank": "lightning_epe.search",
    "Leaderboard": "lightning_epe.search",
    "ListSpace": "lightning_epe.spaces",
    "NB201Space": "lightning_epe.spaces",
    "epe_score": "lightning_epe.scores",
    "get_score": "lightning_epe.scores",
    "selecting_output": "lightning_epe.scores._validation",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_epe' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
