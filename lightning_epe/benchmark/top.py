"""Metrics that judge the top of a ranking, as the papers do: precision at the true top, NDCG@k, and the
share of the ``params``-to-oracle gap a search closes; each with a bootstrap standard error.

Ties are handled exactly, never by the order of the rows: a tie at a cut counts as the expectation over
breaking it uniformly at random. NaN scores rank last (tied together, as :func:`score_ranks`); cells whose
ground truth is NaN are left out.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .correlation import score_ranks


def _pair(scores, truth) -> tuple[np.ndarray, np.ndarray]:
    """Score ranks (NaN lowest) and truth of the cells whose truth is known."""
    r = score_ranks(scores)
    t = np.asarray(truth, dtype=np.float64).ravel()
    if r.shape != t.shape:
        raise ValueError(f"scores and truth must have the same length, got {r.size} and {t.size}")
    keep = ~np.isnan(t)
    return r[keep], t[keep]


def top_count(cells: int, fraction: float | None = None, k: int | None = None) -> int:
    """The size of "the top": ``k`` cells, or ``round(fraction * cells)`` (at least 1). Exactly one is given."""
    if (fraction is None) == (k is None):
        raise ValueError("give exactly one of fraction (e.g. 0.05 for the top 5 %) or k (a number of cells)")
    if k is None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        k = max(1, round(fraction * cells))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return min(int(k), cells)


def in_top_probability(values: np.ndarray, k: int) -> np.ndarray:
    """Probability that each cell is among the ``k`` highest ``values``, ties broken uniformly at random.

    A tie group straddling the cut gets the free places shared evenly: ``(k - above) / size``.
    """
    v = np.asarray(values, dtype=np.float64)
    groups, inverse, counts = np.unique(-v, return_inverse=True, return_counts=True)  # descending value
    above = np.concatenate([[0], np.cumsum(counts)[:-1]])
    share = np.clip((k - above) / counts, 0.0, 1.0)
    return share[inverse.ravel()]


def precision_at_top(scores, truth, fraction: float | None = None, k: int | None = None) -> float:
    """Share of the true top ``k`` (or top ``fraction``) among the score's top ``k``: 1 for a perfect ranking.

    With ties (in the score or the truth) the expected share over uniform tie-breaking. NaN when no
    cell has a known truth.
    """
    r, t = _pair(scores, truth)
    if t.size == 0:
        return math.nan
    k = top_count(t.size, fraction, k)
    return float(np.sum(in_top_probability(r, k) * in_top_probability(t, k)) / k)


def _tie_averaged_dcg(ranks: np.ndarray, gains: np.ndarray, discount: np.ndarray) -> float:
    """DCG of the order by ``ranks`` (descending); a tie group gets its mean gain at each place it spans."""
    groups, inverse, counts = np.unique(-ranks, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    mean_gain = np.bincount(inverse, weights=gains, minlength=groups.size) / counts
    ends = np.cumsum(counts)
    cumulative = np.concatenate([[0.0], np.cumsum(discount)])
    return float(np.sum(mean_gain * (cumulative[ends] - cumulative[ends - counts])))


def ndcg_at_k(scores, truth, k: int | None = None) -> float:
    """NDCG@k of the score's order, with the cell's accuracy as its gain, as VKDNW (Týbl & Neumann, CVPR 2025)
    measures zero-cost proxies.

    VKDNW's code (``NB201/tss_utils.py``, ``get_metrics``) calls scikit-learn's ``ndcg_score`` with the
    accuracies as relevance: ``DCG@k = sum_{j<=k} acc(j-th by score) / log2(j + 1)``, divided by the same
    sum over the cells sorted by accuracy; a tie in the score gets its group's mean gain at every place it
    spans (scikit-learn's default). ``k=None``: every cell. Gains must be >= 0 (accuracies in %).
    """
    r, t = _pair(scores, truth)
    if t.size == 0:
        return math.nan
    if (t < 0).any():
        raise ValueError("NDCG needs non-negative gains (accuracies), got a negative truth value")
    k = t.size if k is None else top_count(t.size, k=k)
    discount = np.zeros(t.size)
    discount[:k] = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = float(np.sum(np.sort(t)[::-1] * discount))
    return _tie_averaged_dcg(r, t, discount) / ideal if ideal > 0 else math.nan


def gap_closed(pick: float, baseline: float, oracle: float) -> float:
    """``(pick - baseline) / (oracle - baseline)``: 0 at the baseline (``params``), 1 at the oracle; NaN when
    the oracle does no better than the baseline."""
    return (pick - baseline) / (oracle - baseline) if oracle != baseline else math.nan


def bootstrap(statistic: Callable[[np.ndarray], float], cells: int, resamples: int = 200,
              seed: int = 0) -> tuple[float, float]:
    """A statistic of a table and its bootstrap standard error.

    ``statistic(rows)`` computes the figure from the table's rows ``rows`` (an index array); it is called
    once with every row, then on ``resamples`` resamples of the rows drawn with replacement. Returns
    ``(value on the table, std of the resampled values, ddof 1)``; NaN resampled values are left out.
    """
    if cells < 1:
        raise ValueError("cannot bootstrap a statistic of an empty table")
    if resamples < 2:
        raise ValueError(f"resamples must be >= 2, got {resamples}")
    value = float(statistic(np.arange(cells)))
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, cells, size=cells)) for _ in range(resamples)], dtype=np.float64)
    draws = draws[~np.isnan(draws)]
    return value, float(np.std(draws, ddof=1)) if draws.size > 1 else math.nan
