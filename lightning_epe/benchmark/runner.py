"""``run_benchmark``: score table + ground truth -> correlations, simulated search table, files, plots."""
from __future__ import annotations

import re
import warnings
from pathlib import Path

from .correlation import rank_correlations
from .draws import SECONDS_COLUMNS, draw_series, draws_table
from .ground_truth import load_ground_truth
from .report import (
    MATPLOTLIB_MISSING,
    markdown_report,
    n_warning,
    plot_scatter,
    plot_search,
    print_draws,
    print_report,
    write_csv,
)
from .simulation import simulate_random_search
from .tables import join, read_scores


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run_benchmark(scores: str, ground_truth: str, out_dir: str, score_columns: list[str] | None = None,
                  truth_columns: list[str] | None = None, runs: int = 500,
                  ns: list[int] = [10, 100, 500, 1000], seed: int = 0, plots: bool = True,
                  prefix: str = "", draws_ks: list[int] = [1, 2, 4, 8],
                  draws_rules: list[str] = ["mean", "median", "rank"]) -> dict:
    """Benchmark training-free scores against NAS-Bench-201 ground truth.

    Joins the score table to the ground truth (by NB201 index, else by arch string), computes
    Kendall tau-b and Spearman rho for every (score, ground truth) pair, simulates the paper's
    random search, prints rich tables and writes ``{prefix}report.md``, ``{prefix}correlations.csv``,
    ``{prefix}search.csv`` and, with ``plots``, ``{prefix}scatter_<score>.png`` and
    ``{prefix}search_<score>.png`` into ``out_dir``. NaN scores are kept, ranked last and counted.

    Per-draw columns (``<score>@b<j>``, ``@i<j>``, ``@d<j>``; see ``lightning_epe.benchmark.draws``)
    are not benchmarked one by one: they make the k-table (``{prefix}draws.csv`` and a report
    section): tau/rho of k draws over batches, inits and both, combined by each rule, and the
    seconds per cell each k costs (from ``seconds_build``/``seconds_score`` when present).

    An N larger than the table's cells warns (``UserWarning``, and a note in the report; its rows are
    marked ``N*``): drawn with replacement from the table, such a search finds the table's best-scored
    cell in almost every run, which says nothing about a search of N cells in the whole space.

    Args:
        scores: score table: a CSV with an ``index`` (NB201 index) or ``arch_str`` column plus score
            columns, or a search's ``scores.jsonl`` (keys ``candidate``, ``arch``, ``score``, ``error``).
        ground_truth: a CSV like ``nb201_accuracies.csv`` (``index``/``arch_str`` plus accuracy
            columns), or ``nats:PATH`` for the official NATS-Bench topology files (needs ``nats_bench``).
        out_dir: folder for the report files (created if needed).
        score_columns: score columns to evaluate (default: every numeric column but identifiers
            such as ``index``, ``seed``, ``naslib_ops``).
        truth_columns: ground-truth columns (default: every accuracy column of the ground truth).
        runs: simulated random-search runs per N.
        ns: search sizes N (cells drawn with replacement per run).
        seed: seed of the simulated draws.
        plots: write PNG plots (needs matplotlib; skipped with an install hint when missing).
        prefix: prefix of every file written (e.g. ``"nb201_cifar10_"``).
        draws_ks: numbers of draws in the k-table.
        draws_rules: combination rules in the k-table (``mean``, ``median``, ``rank``).

    Returns:
        ``{"correlations": [...], "search": [...], "draws": [...], "files": [...], "cells", "key",
        "notes"}``; each
        correlation row has ``score, truth, tau, rho, n, n_nan, n_truth_nan``; each search row
        ``score, n, column, mean, std, expected_mean, expected_std, best, paper_mean, paper_std,
        runs, all_nan_runs``.
    """
    score_table = read_scores(scores, score_columns)
    truth_table = load_ground_truth(ground_truth, truth_columns)
    joined = join(score_table, truth_table)
    notes = list(joined.notes)
    too_large = n_warning(ns, len(joined.arch_str)) if joined.scores else None
    if too_large:
        warnings.warn(too_large, UserWarning, stacklevel=2)
        notes.append(too_large)
    draw_columns = {c for names in draw_series(list(joined.scores)).values() for c in names}
    draw_columns |= {c for c in SECONDS_COLUMNS if c in joined.scores} if draw_columns else set()
    per_draw = {c: joined.scores.pop(c) for c in list(joined.scores) if c in draw_columns}
    draws = draws_table(per_draw, joined.truth, joined.has_value, ks=draws_ks, rules=draws_rules) if per_draw else []
    correlations, search = [], []
    for name, values in joined.scores.items():
        n_nan = int((values != values).sum())
        if n_nan:
            notes.append(f"{name}: {n_nan} of {values.size} scores are NaN, ranked last")
        for truth_name, truth_values in joined.truth.items():
            correlations.append({"score": name, "truth": truth_name, **rank_correlations(values, truth_values)})
        for row in simulate_random_search(values, joined.truth, ns=list(ns), runs=runs, seed=seed):
            search.append({"score": name, **row})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = {"correlations": correlations, "search": search, "draws": draws}
    files = [write_csv(out / f"{prefix}{name}.csv", rows) for name, rows in tables.items() if rows]
    plot_files = []
    if plots:
        try:
            for name, values in joined.scores.items():
                by_truth = {r["truth"]: r for r in correlations if r["score"] == name}
                plot_files.append(plot_scatter(out / f"{prefix}scatter_{_safe(name)}.png", values, joined.truth,
                                               name, by_truth))
                plot_files.append(plot_search(out / f"{prefix}search_{_safe(name)}.png", search, name))
        except ImportError:
            notes.append(MATPLOTLIB_MISSING)
            plot_files = []
    meta = {"scores": str(scores), "ground_truth": str(ground_truth), "cells": len(joined.arch_str),
            "key": joined.key, "notes": notes, "plots": [str(p) for p in plot_files]}
    report = out / f"{prefix}report.md"
    report.write_text(markdown_report(correlations, search, meta, draws) + "\n")
    files += [report] + plot_files
    print_report(correlations, search, meta)
    if draws:
        print_draws(draws)
    return {"correlations": correlations, "search": search, "draws": draws, "files": [str(f) for f in files],
            "cells": len(joined.arch_str), "key": joined.key, "notes": notes}
