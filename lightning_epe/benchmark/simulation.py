"""The paper's random-search table, by simulation over a score table (and in closed form)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .correlation import score_ranks

#: Ground-truth column -> the paper's column header.
PAPER_COLUMNS = {
    "cifar10_valid_acc": "C10 val",
    "cifar10_test_acc": "C10 test",
    "cifar100_valid_acc": "C100 val",
    "cifar100_test_acc": "C100 test",
    "imagenet16_120_valid_acc": "IN16 val",
    "imagenet16_120_test_acc": "IN16 test",
}

#: EPE-NAS's published random search on NAS-Bench-201 (spec, section 4): N -> wall time of one run
#: (``time_s``) and (mean, std) accuracy in % per ground-truth column.
PAPER_TABLE: dict[int, dict] = {
    10: {"time_s": 2.3, "cifar10_valid_acc": (89.90, 0.21), "cifar10_test_acc": (92.63, 0.32),
         "cifar100_valid_acc": (69.78, 2.44), "cifar100_test_acc": (70.10, 1.71),
         "imagenet16_120_valid_acc": (41.73, 3.60), "imagenet16_120_test_acc": (41.92, 4.25)},
    100: {"time_s": 20.5, "cifar10_valid_acc": (88.74, 3.16), "cifar10_test_acc": (91.59, 0.87),
          "cifar100_valid_acc": (67.28, 3.68), "cifar100_test_acc": (67.19, 3.82),
          "imagenet16_120_valid_acc": (38.66, 4.75), "imagenet16_120_test_acc": (38.80, 5.41)},
    500: {"time_s": 105.8, "cifar10_valid_acc": (88.17, 1.35), "cifar10_test_acc": (92.27, 1.75),
          "cifar100_valid_acc": (69.23, 0.62), "cifar100_test_acc": (69.33, 0.66),
          "imagenet16_120_valid_acc": (41.93, 3.19), "imagenet16_120_test_acc": (42.05, 3.09)},
    1000: {"time_s": 206.2, "cifar10_valid_acc": (87.87, 0.85), "cifar10_test_acc": (91.31, 1.69),
           "cifar100_valid_acc": (69.44, 0.83), "cifar100_test_acc": (69.58, 0.83),
           "imagenet16_120_valid_acc": (41.86, 2.33), "imagenet16_120_test_acc": (41.84, 2.06)},
}


def _truth_columns(truth_table) -> dict[str, np.ndarray]:
    if isinstance(truth_table, Mapping):
        return {str(k): np.asarray(v, dtype=np.float64).ravel() for k, v in truth_table.items()}
    return {"accuracy": np.asarray(truth_table, dtype=np.float64).ravel()}


def expected_random_search(scores, truth, n: int, replace: bool = True) -> tuple[float, float]:
    """Exact mean and std of the accuracy random search picks: N draws, with replacement (EPE-NAS's
    simulation, the default) or without (``replace=False``: N distinct cells, as a search of N candidates).

    The pick is the arg-max score of the draws (NaN ranked last; among equal scores the first
    drawn, so uniformly among the tied cells). With the cells' score groups sorted, the best
    drawn group is g with probability ``F(C_g) - F(C_{g-1})`` (C_g: cells scoring at most g's score),
    ``F(C) = (C / M)^N`` with replacement and ``binom(C, N) / binom(M, N)`` without. Cells with NaN
    truth are left out of the pool; without replacement N may not exceed the pool.
    """
    if n < 1:
        raise ValueError(f"N must be >= 1, got {n}")
    t = np.asarray(truth, dtype=np.float64).ravel()
    r = score_ranks(scores)
    if r.shape != t.shape:
        raise ValueError(f"scores and truth must have the same length, got {r.size} and {t.size}")
    keep = ~np.isnan(t)
    r, t = r[keep], t[keep]
    if t.size == 0:
        return float("nan"), float("nan")
    if not replace and n > t.size:
        raise ValueError(f"cannot draw N = {n} distinct cells from a table of {t.size} (with a known truth); "
                         f"use N <= {t.size} or draws with replacement")
    groups, inverse, counts = np.unique(r, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse.ravel(), weights=t, minlength=groups.size)
    squares = np.bincount(inverse.ravel(), weights=t * t, minlength=groups.size)
    below = np.cumsum(counts)
    at_most = _share_all_drawn_below(below, t.size, n, replace)
    prob = at_most - np.concatenate([[0.0], at_most[:-1]])
    mean = float(np.sum(prob * sums / counts))
    second = float(np.sum(prob * squares / counts))
    return mean, float(np.sqrt(max(second - mean * mean, 0.0)))


def _share_all_drawn_below(below: np.ndarray, m: int, n: int, replace: bool) -> np.ndarray:
    """P(every one of N draws falls among the ``below`` lowest-scored of ``m`` cells), per count in ``below``."""
    if replace:
        return (below / m) ** n
    from scipy.special import gammaln  # scipy comes with scikit-learn, a dependency

    c = below.astype(np.float64)
    log_ratio = gammaln(c + 1) - gammaln(np.maximum(c - n, 0) + 1) - gammaln(m + 1) + gammaln(m - n + 1)
    return np.where(c >= n, np.exp(np.minimum(log_ratio, 0.0)), 0.0)


def simulate_random_search(scores, truth_table, ns: Sequence[int] = (10, 100, 500, 1000), runs: int = 500,
                           seed: int = 0, replace: bool = True) -> list[dict]:
    """Simulate the paper's random search over a score table covering the space (or a uniform sample).

    Each run draws N cells uniformly *with replacement* from the table's cells (``replace=False``: N
    distinct cells, in random order), keeps the one
    with the highest score (NaN ranked last, ties to the first drawn) and records its accuracy in
    every ground-truth column. The same draws serve every column (one search, several reported
    accuracies) and, for a given ``seed``, every score column.

    Args:
        scores: one score per cell (NaN allowed).
        truth_table: ``{column: accuracies}`` aligned with ``scores`` (or one array).
        ns: the search sizes N.
        runs: independent runs per N.
        seed: seed of the draws (numpy PCG64).

    Returns:
        one dict per (N, column): ``n``, ``column``, ``mean``, ``std`` (over runs, ddof 0),
        ``runs``, ``all_nan_runs`` (runs whose draws were all NaN), ``expected_mean`` and
        ``expected_std`` (exact, :func:`expected_random_search`), ``best`` (the table's best
        accuracy), and the paper's ``paper_mean``/``paper_std`` where it reports that cell.
    """
    columns = _truth_columns(truth_table)
    ranks = score_ranks(scores)
    m = ranks.size
    for name, values in columns.items():
        if values.size != m:
            raise ValueError(f"truth column {name!r} has {values.size} values for {m} scores")
    if m == 0:
        raise ValueError("cannot simulate a search over an empty score table")
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        n = int(n)
        if n < 1:
            raise ValueError(f"every N must be >= 1, got {n}")
        if not replace and n > m:
            raise ValueError(f"cannot draw N = {n} distinct cells from a table of {m}; use N <= {m} or replace=True")
        draws = (rng.integers(0, m, size=(runs, n)) if replace
                 else np.stack([rng.choice(m, size=n, replace=False) for _ in range(runs)]))
        drawn = ranks[draws]
        best = draws[np.arange(runs), np.argmax(drawn, axis=1)]
        all_nan = int((drawn.max(axis=1) == 0).sum())
        for name, values in columns.items():
            picked = values[best]
            exp_mean, exp_std = expected_random_search(scores, values, n, replace=replace)
            paper = PAPER_TABLE.get(n, {}).get(name)
            rows.append({
                "n": n, "column": name,
                "mean": float(np.nanmean(picked)) if not np.isnan(picked).all() else float("nan"),
                "std": float(np.nanstd(picked)) if not np.isnan(picked).all() else float("nan"),
                "runs": runs, "all_nan_runs": all_nan, "expected_mean": exp_mean, "expected_std": exp_std,
                "best": float(np.nanmax(values)) if not np.isnan(values).all() else float("nan"),
                "paper_mean": paper[0] if paper else None, "paper_std": paper[1] if paper else None,
            })
    return rows
