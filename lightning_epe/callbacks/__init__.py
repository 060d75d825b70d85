"""Lightning callbacks."""
from .epe_score import PER_PAIR_MAX, EPEScore, epe_per_pair, same_class_pairs

__all__ = ["EPEScore", "PER_PAIR_MAX", "epe_per_pair", "same_class_pairs"]
