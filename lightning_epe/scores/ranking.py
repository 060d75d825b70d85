"""Rank aggregation: values of several proxies combined through their ranks across candidates.

As AZ-NAS (Lee & Ham, 2024) does, the aggregate of candidate i is ``sum_m log(rank_m(i) / n)`` with
ranks 1 (worst) .. n (best), ties averaged, NaN ranked worst; members may be weighted, and a second stage may
re-order the top of the first (the default ensemble: the tau-chosen members, then their top 30 % re-ranked by
weights fitted for the top, :data:`DEFAULT_RERANK`). Used by the rank ensemble
(``ensemble.py``), AZ-NAS's own aggregate (``az_nas.py``) and draws combined by rank (``draws.py``);
it imports no score, so none of them import each other through it.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .registry import score_info

#: The previous default members (until issue 20), chosen for Kendall tau: every subset of up to 5 proxies tried on
#: one sample of NAS-Bench-201 cells; Kendall tau 0.768 (rho 0.931) with CIFAR-10 valid accuracy on a second one
#: (docs/benchmarks/README.md, bench/nb201_sota.py). ``members=TAU_MEMBERS`` (equal weights, no re-ranking) is
#: that ensemble exactly; it is also the default's first stage.
TAU_MEMBERS: tuple[str, ...] = ("epe", "synflow", "meco", "az_expressivity", "az_trainability")

#: Weights built for the top of the ranking: an L2 logistic regression of "in the true top 20 % of CIFAR-10 valid
#: accuracy" on the members' ``log(rank / n)``, fitted on sample 0 of NAS-Bench-201 (500 cells, CIFAR-10 networks
#: C=16 N=5, each member fed by its official protocol; C=10 chosen by 5-fold cross-validated log-loss), as
#: ``bench/nb201_top.py`` fits it (a test refits it). The default's second stage.
TOP_WEIGHTS: dict[str, float] = {
    "epe": 2.60, "synflow": 2.04, "meco": 1.36, "az_expressivity": 0.14, "az_trainability": 2.78, "params": 2.08,
}

#: The default ensemble's members: the tau members and ``params`` (free to compute).
DEFAULT_MEMBERS: tuple[str, ...] = tuple(TOP_WEIGHTS)

#: The default's first stage: the tau ensemble (weight 1 for ``TAU_MEMBERS``, 0 for ``params``).
DEFAULT_WEIGHTS: dict[str, float] = {m: 1.0 if m in TAU_MEMBERS else 0.0 for m in DEFAULT_MEMBERS}

#: The default's second stage: the first stage's top 30 %, re-ranked by ``TOP_WEIGHTS``. Chosen on sample 0 among
#: the candidates costing <= 2x EPE for precision at the true top 5 % keeping Kendall tau (bench/nb201_top.py,
#: docs/benchmarks/nb201_top_report.md).
DEFAULT_RERANK: dict = {"keep": 0.3, "weights": TOP_WEIGHTS}


def check_members(members: Sequence[str]) -> tuple[str, ...]:
    """``members`` as a tuple of registered score names (not 'ensemble' itself); a ValueError otherwise."""
    members = tuple(members)
    if not members or "ensemble" in members:
        raise ValueError(f"an ensemble needs one or more member scores (not 'ensemble' itself), got {members!r}")
    for name in members:
        score_info(name)  # unknown names raise with the known ones
    return members


def rank_ensemble(table: Sequence[Mapping[str, float | None]], members: Sequence[str] | None = None,
                  weights: Mapping[str, float] | None = None, rerank: Mapping | None = None) -> list[float]:
    """Ensemble values of the candidates in ``table`` (one ``{member: value}`` per candidate); higher is better.

    ``members=None``: the default ensemble (:data:`DEFAULT_MEMBERS`, :data:`DEFAULT_WEIGHTS` and
    :data:`DEFAULT_RERANK` unless ``weights`` / ``rerank`` are given). Named ``members``: their plain aggregate
    (:func:`rank_aggregate`, equal weights) unless ``weights`` / ``rerank`` are given (:func:`ensemble_values`).
    """
    members, weights, rerank = ensemble_rule(members, weights, rerank)
    columns = {name: [_as_float(row.get(name)) for row in table] for name in members}
    return ensemble_values(columns, members, weights, rerank).tolist() if table else []


def ensemble_rule(members: Sequence[str] | None, weights: Mapping[str, float] | None,
                  rerank: Mapping | None) -> tuple[tuple[str, ...], Mapping | None, Mapping | None]:
    """The members, weights and re-ranking an ensemble uses (the defaults for ``members=None``), checked."""
    if members is None:
        members = DEFAULT_MEMBERS
        if weights is None and rerank is None:
            weights, rerank = DEFAULT_WEIGHTS, DEFAULT_RERANK
    members = check_members(members)
    _check_weights(members, weights)
    _check_rerank(members, rerank)
    return members, weights, rerank


def ensemble_values(columns: Mapping[str, Sequence[float]], members: Sequence[str] | None = None,
                    weights: Mapping[str, float] | None = None, rerank: Mapping | None = None) -> np.ndarray:
    """The ensemble's values from one column of values per member (``rank_ensemble`` on columns).

    One stage: :func:`rank_aggregate` of the members (with ``weights``). With ``rerank={"keep": q, "weights":
    w}``: the candidates in the top fraction ``q`` of that aggregate are re-ordered by the aggregate with weights
    ``w``, the others keep their order below them; the value is then ``log(rank / n)`` of the final order.
    """
    members, weights, rerank = ensemble_rule(members, weights, rerank)
    first = rank_aggregate({m: columns[m] for m in members}, weights)
    if rerank is None:
        return first
    n = first.size
    kept = average_ranks(first) > (1.0 - float(rerank["keep"])) * n
    second = rank_aggregate({m: columns[m] for m in members}, rerank["weights"])
    order = np.where(kept, n + average_ranks(np.where(kept, second, -np.inf)), average_ranks(first))
    return np.log(average_ranks(order) / n)


def rank_aggregate(columns: Mapping[str, Sequence[float]], weights: Mapping[str, float] | None = None) -> np.ndarray:
    """``sum over columns of w * log(rank / n)``: ranks 1 (worst) .. n, ties averaged, NaN ranked worst.

    ``weights`` maps every column to its weight ``w`` (``None``: 1 each, AZ-NAS's aggregation); a zero weight
    leaves that column out."""
    if weights is not None:
        _check_weights(tuple(columns), weights)
    total = None
    for name, values in columns.items():
        values = np.array(values, dtype=np.float64)
        values[np.isnan(values)] = -np.inf  # NaN (and a missing value) ranks worst
        term = np.log(average_ranks(values) / len(values))
        if weights is not None:
            term = float(weights[name]) * term
        total = term if total is None else total + term
    if total is None:
        raise ValueError("rank_aggregate needs at least one column")
    return total


def _check_weights(members: Sequence[str], weights: Mapping[str, float] | None) -> None:
    """Weights, when given, name exactly the members, each with a finite number."""
    if weights is None:
        return
    if not isinstance(weights, Mapping):
        raise ValueError(f"weights must map each member to a number, e.g. {{'epe': 1.0}}, got {weights!r}")
    if set(weights) != set(members):
        raise ValueError(f"weights must name exactly the members {sorted(members)}: missing "
                         f"{sorted(set(members) - set(weights))}, not members {sorted(set(weights) - set(members))}")
    bad = {k: v for k, v in weights.items() if not isinstance(v, (int, float)) or not math.isfinite(v)}
    if bad:
        raise ValueError(f"every weight must be a finite number, got {bad}")


def _check_rerank(members: Sequence[str], rerank: Mapping | None) -> None:
    """A re-ranking, when given, is ``{"keep": fraction in (0, 1], "weights": one per member}``."""
    if rerank is None:
        return
    if not isinstance(rerank, Mapping) or set(rerank) != {"keep", "weights"}:
        raise ValueError("rerank must be {'keep': a fraction in (0, 1], 'weights': {member: weight}} "
                         f"(the top fraction of the first stage, re-ordered by those weights), got {rerank!r}")
    keep = rerank["keep"]
    if not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise ValueError(f"rerank keep must be a fraction in (0, 1], got {keep!r}")
    _check_weights(members, rerank["weights"])


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
