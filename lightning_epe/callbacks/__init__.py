"""Lightning callbacks."""
from .epe_score import EPEScore

__all__ = ["EPEScore"]
