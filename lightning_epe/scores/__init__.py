"""Training-free scores: pure functions ``(model, inputs, targets, **options) -> float``."""
from .epe import epe_score
from .registry import available, get_score, register_score

register_score("epe")(epe_score)

__all__ = ["available", "epe_score", "get_score", "register_score"]
