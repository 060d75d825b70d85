"""Training-free scores: pure functions ``(model, inputs, targets, **options) -> float``.

Each score registers itself where it is defined (``@register_score``); importing its module is
all this package does. Add a proxy: one module here, its test, a row in docs/proxies.md.
"""
from . import az_nas, epe, gradient_proxies, jacob_cov, meco, naswot, size, swap, synflow, vkdnw, zico  # noqa: F401 (importing a score's module registers it)
from ._validation import check_batch, check_labels, logits_of
from .draws import Draws, draw_seed, rank_draws, reinitialising, score_draws, score_module, seeded
from .ensemble import (
    DEFAULT_MEMBERS,
    DEFAULT_RERANK,
    DEFAULT_WEIGHTS,
    TAU_MEMBERS,
    TOP_WEIGHTS,
    ensemble_scores,
    ensemble_values,
    rank_ensemble,
)
from .epe import epe_score
from .fused import score_many
from .gradient_proxies import grad_norm_score, snip_score
from .jacob_cov import jacob_cov_score
from .naswot import naswot_score
from .registry import ScoreInfo, available, get_score, list_scores, register_score, score_info, unregister_score
from .size import flops_score, params_score
from .synflow import synflow_score

__all__ = [
    "DEFAULT_MEMBERS", "DEFAULT_RERANK", "DEFAULT_WEIGHTS", "TAU_MEMBERS", "TOP_WEIGHTS", "Draws", "ScoreInfo",
    "available", "check_batch", "check_labels", "draw_seed", "ensemble_scores", "ensemble_values", "epe_score",
    "flops_score", "get_score", "grad_norm_score", "jacob_cov_score", "list_scores",
    "logits_of", "naswot_score", "params_score", "rank_draws", "rank_ensemble", "register_score", "reinitialising",
    "score_draws", "score_info", "score_many", "score_module", "seeded", "snip_score", "synflow_score",
    "unregister_score",
]
