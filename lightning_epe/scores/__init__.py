"""Training-free scores: pure functions ``(model, inputs, targets, **options) -> float``."""
from .ensemble import DEFAULT_MEMBERS, ensemble_scores, rank_ensemble
from .draws import Draws, draw_seed, rank_draws, reinitialising, score_draws, seeded
from .epe import epe_score
from .gradient_proxies import grad_norm_score, snip_score
from .jacob_cov import jacob_cov_score
from .naswot import naswot_score
from .registry import ScoreInfo, available, get_score, register_score, score_info
from .size import flops_score, params_score
from .synflow import synflow_score

register_score("epe", needs_labels=True, data_dependent=True)(epe_score)
register_score("naswot", needs_labels=False, data_dependent=True)(naswot_score)
register_score("jacob_cov", needs_labels=False, data_dependent=True)(jacob_cov_score)
register_score("synflow", needs_labels=False, data_dependent=False)(synflow_score)
register_score("grad_norm", needs_labels=True, data_dependent=True)(grad_norm_score)
register_score("snip", needs_labels=True, data_dependent=True)(snip_score)
register_score("params", needs_labels=False, data_dependent=False)(params_score)
register_score("flops", needs_labels=False, data_dependent=False)(flops_score)
register_score("ensemble", needs_labels=True, data_dependent=True, combine=rank_ensemble)(ensemble_scores)

__all__ = [
    "DEFAULT_MEMBERS", "Draws", "ScoreInfo", "available", "draw_seed", "rank_draws", "reinitialising",
    "score_draws", "seeded", "ensemble_scores", "rank_ensemble", "epe_score", "flops_score", "get_score", "grad_norm_score",
    "jacob_cov_score", "naswot_score", "params_score", "register_score", "score_info",
    "snip_score", "synflow_score",
]
