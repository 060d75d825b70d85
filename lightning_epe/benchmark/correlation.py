"""Rank correlations (Kendall tau-b, Spearman rho; torchmetrics) between scores and ground truth."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef


def score_ranks(scores) -> np.ndarray:
    """Dense ranks of ``scores`` as float64 (ties share a rank), with every NaN tied *below* all others.

    NaN scores rank last, below ``-inf``, as a search skipping NaN would treat them.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    nan = np.isnan(s)
    ranks = np.zeros(s.shape, dtype=np.float64)
    if (~nan).any():
        _, dense = np.unique(s[~nan], return_inverse=True)
        ranks[~nan] = dense.ravel() + 1.0
    return ranks


def rank_correlations(scores, truth) -> dict:
    """Kendall tau-b and Spearman rho between a score column and a ground-truth column.

    NaN scores are kept, tied together and ranked last (below every other score); their number
    is reported as ``n_nan``. Cells whose ground truth is NaN carry no information and are left
    out, counted in ``n_truth_nan``. tau/rho are NaN when fewer than 2 cells remain or a side is
    constant.

    Args:
        scores: one score per cell (array-like of floats, NaN allowed).
        truth: the ground-truth value of the same cells, in the same order.

    Returns:
        ``{"tau", "rho", "n", "n_nan", "n_truth_nan"}``: ``n`` cells used (NaN scores included).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores and truth must have the same length, got {s.size} and {t.size}")
    keep = ~np.isnan(t)
    s, t = s[keep], t[keep]
    result = {"tau": math.nan, "rho": math.nan, "n": int(s.size), "n_nan": int(np.isnan(s).sum()),
              "n_truth_nan": int((~keep).sum())}
    ranks = score_ranks(s)
    if s.size < 2 or np.all(ranks == ranks[0]) or np.all(t == t[0]):
        return result
    r, g = torch.from_numpy(ranks), torch.from_numpy(t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result["tau"] = float(kendall_rank_corrcoef(r, g, variant="b"))
        result["rho"] = float(spearman_corrcoef(r, g))
    return result
