"""Rank aggregation: values of several proxies combined through their ranks across candidates.

As AZ-NAS (Lee & Ham, 2024) does, the aggregate of candidate i is ``sum_m log(rank_m(i) / n)`` with
ranks 1 (worst) .. n (best), ties averaged, NaN ranked worst. Used by the rank ensemble
(``ensemble.py``), AZ-NAS's own aggregate (``az_nas.py``) and draws combined by rank (``draws.py``);
it imports no score, so none of them import each other through it.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .registry import score_info

#: The best combination measured on NAS-Bench-201 / CIFAR-10: chosen on one sample of cells, Kendall tau 0.768
#: (rho 0.931) with CIFAR-10 valid accuracy on a second one, at 2.06x the cost of EPE alone
#: (docs/benchmarks/README.md, bench/nb201_sota.py).
DEFAULT_MEMBERS: tuple[str, ...] = ("epe", "synflow", "meco", "az_expressivity", "az_trainability")


def check_members(members: Sequence[str]) -> tuple[str, ...]:
    """``members`` as a tuple of registered score names (not 'ensemble' itself); a ValueError otherwise."""
    members = tuple(members)
    if not members or "ensemble" in members:
        raise ValueError(f"an ensemble needs one or more member scores (not 'ensemble' itself), got {members!r}")
    for name in members:
        score_info(name)  # unknown names raise with the known ones
    return members


def rank_ensemble(table: Sequence[Mapping[str, float | None]], members: Sequence[str] = DEFAULT_MEMBERS) -> list[float]:
    """Ensemble values of the candidates in ``table`` (one ``{member: value}`` per candidate); higher is better."""
    members = check_members(members)
    columns = {name: [_as_float(row.get(name)) for row in table] for name in members}
    return rank_aggregate(columns).tolist() if table else []


def rank_aggregate(columns: Mapping[str, Sequence[float]]) -> np.ndarray:
    """``sum over columns of log(rank / n)``: ranks 1 (worst) .. n, ties averaged, NaN ranked worst."""
    total = None
    for values in columns.values():
        values = np.array(values, dtype=np.float64)
        values[np.isnan(values)] = -np.inf  # NaN (and a missing value) ranks worst
        term = np.log(average_ranks(values) / len(values))
        total = term if total is None else total + term
    if total is None:
        raise ValueError("rank_aggregate needs at least one column")
    return total


def _as_float(value) -> float:
    return math.nan if value is None else float(value)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n in ascending order of value, ties sharing their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]
