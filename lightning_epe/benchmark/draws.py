"""The k-table: how ranking quality grows with the number of draws a score is combined over.

A score table may hold per-draw columns ``<score>@b<j>`` (initialisation 0 on batch j),
``<score>@i<j>`` (initialisation j on batch 0) and ``<score>@d<j>`` (initialisation j on batch j),
j >= 1, with ``<score>@b0`` as draw 0 of every kind (``bench/nb201_draws.py`` writes them), and
optionally ``seconds_build`` / ``seconds_score`` (seconds to build one network / score one draw).
For k draws over ``batches``, ``inits`` or ``both``, the first k columns of the series are combined
by each rule of :class:`lightning_epe.scores.Draws` and correlated with the ground truth.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np

from ..scores.draws import RULES, Draws, rank_draws
from .correlation import rank_correlations

DRAW_COLUMN = re.compile(r"^(?P<score>.+)@(?P<kind>[bid])(?P<draw>\d+)$")
KINDS = {"b": "batches", "i": "inits", "d": "both"}
SECONDS_COLUMNS = ("seconds_build", "seconds_score")


def draw_series(columns: Sequence[str]) -> dict[tuple[str, str], list[str]]:
    """``{(score, over): [column of draw 0, draw 1, ...]}`` for the draw columns among ``columns``.

    A series stops at its first missing draw; draw 0 of every kind is ``<score>@b0``.
    """
    parsed = {}
    for name in columns:
        match = DRAW_COLUMN.match(name)
        if match:
            parsed[(match["score"], match["kind"], int(match["draw"]))] = name
    series = {}
    for score in dict.fromkeys(s for s, kind, j in parsed if kind == "b" and j == 0):
        for kind, over in KINDS.items():
            names = [parsed[(score, "b", 0)]]
            while (score, kind, len(names)) in parsed:
                names.append(parsed[(score, kind, len(names))])
            if kind == "b" or len(names) > 1:
                series[(score, over)] = names
    return series


def combine(values: np.ndarray, rule: str) -> np.ndarray:
    """One value per row of ``values`` (cells x draws), combined by ``rule`` (see ``Draws``)."""
    if rule == "rank":
        return np.array(rank_draws(values.tolist()))
    draws = Draws(k=values.shape[1], combine=rule)
    return np.array([draws.combine_values(row) for row in values.tolist()])


def draws_table(columns: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray],
                has_value=None, ks: Sequence[int] = (1, 2, 4, 8), rules: Sequence[str] = RULES) -> list[dict]:
    """Rank correlations of every (score, over, k, rule) with every ground-truth column.

    Each series is evaluated on the cells that hold all of its first ``top`` draws, for every
    ``top`` in ``ks`` that gives a new set of cells (e.g. k <= 4 on all cells and k <= 8 on a
    subset), so the k of one set of rows are compared on the same cells. ``has_value(column)``
    gives the rows that hold a value (default: all). Rows: ``score, over, cells, k, rule, truth,
    tau, rho, n_nan, seconds_per_cell, cost_vs_k1`` (seconds when ``seconds_build`` and
    ``seconds_score`` are among ``columns``: build + k scores over batches, k builds and scores otherwise).
    """
    for rule in rules:
        if rule not in RULES:
            raise ValueError(f"unknown draws rule {rule!r}; accepted: {', '.join(RULES)}")
    n = len(next(iter(truth.values())))
    has_value = has_value or (lambda column: np.ones(n, dtype=bool))
    rows = []
    for (score, over), names in draw_series(list(columns)).items():
        tops = sorted(k for k in set(ks) if k <= len(names))
        sets = {}  # cell mask -> the largest k it holds, in order of first appearance
        for top in tops:
            cells = np.logical_and.reduce([has_value(c) for c in names[:top]])
            if cells.any():
                sets[cells.tobytes()] = (cells, top)
        for cells, top in sets.values():
            if top == 1 and over != "batches":
                continue  # the same single draw as over batches
            for k in (k for k in tops if k <= top):
                values = np.stack([columns[c][cells] for c in names[:k]], axis=1)
                seconds = _seconds(columns, cells, over, k)
                base = _seconds(columns, cells, over, 1)
                for rule in (["single"] if k == 1 else rules):
                    combined = values[:, 0] if k == 1 else combine(values, rule)
                    for truth_name, truth_values in truth.items():
                        r = rank_correlations(combined, truth_values[cells])
                        rows.append({"score": score, "over": over, "cells": int(cells.sum()), "k": k, "rule": rule,
                                     "truth": truth_name, "tau": r["tau"], "rho": r["rho"], "n_nan": r["n_nan"],
                                     "seconds_per_cell": seconds,
                                     "cost_vs_k1": None if seconds is None else seconds / base})
    return rows


def _seconds(columns: Mapping[str, np.ndarray], cells: np.ndarray, over: str, k: int) -> float | None:
    if not all(c in columns for c in SECONDS_COLUMNS):
        return None
    build = float(np.nanmean(columns["seconds_build"][cells]))
    score = float(np.nanmean(columns["seconds_score"][cells]))
    return build + k * score if over == "batches" else k * (build + score)
