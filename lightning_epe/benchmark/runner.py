"""``run_benchmark``: score table + ground truth -> correlations, simulated search table, files, plots."""
from __future__ import annotations

import re
from pathlib import Path

from .correlation import rank_correlations
from .ground_truth import load_ground_truth
from .report import MATPLOTLIB_MISSING, markdown_report, plot_scatter, plot_search, print_report, write_csv
from .simulation import simulate_random_search
from .tables import join, read_scores


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def run_benchmark(scores: str, ground_truth: str, out_dir: str, score_columns: list[str] | None = None,
                  truth_columns: list[str] | None = None, runs: int = 500,
                  ns: list[int] = [10, 100, 500, 1000], seed: int = 0, plots: bool = True,
                  prefix: str = "") -> dict:
    """Benchmark training-free scores against NAS-Bench-201 ground truth.

    Joins the score table to the ground truth (by NB201 index, else by arch string), computes
    Kendall tau-b and Spearman rho for every (score, ground truth) pair, simulates the paper's
    random search, prints rich tables and writes ``{prefix}report.md``, ``{prefix}correlations.csv``,
    ``{prefix}search.csv`` and, with ``plots``, ``{prefix}scatter_<score>.png`` and
    ``{prefix}search_<score>.png`` into ``out_dir``. NaN scores are kept, ranked last and counted.

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

    Returns:
        ``{"correlations": [...], "search": [...], "files": [...], "cells", "key", "notes"}``; each
        correlation row has ``score, truth, tau, rho, n, n_nan, n_truth_nan``; each search row
        ``score, n, column, mean, std, expected_mean, expected_std, best, paper_mean, paper_std,
        runs, all_nan_runs``.
    """
    score_table = read_scores(scores, score_columns)
    truth_table = load_ground_truth(ground_truth, truth_columns)
    joined = join(score_table, truth_table)
    notes = list(joined.notes)
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
    files = [write_csv(out / f"{prefix}correlations.csv", correlations), write_csv(out / f"{prefix}search.csv", search)]
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
    report.write_text(markdown_report(correlations, search, meta) + "\n")
    files += [report] + plot_files
    print_report(correlations, search, meta)
    return {"correlations": correlations, "search": search, "files": [str(f) for f in files],
            "cells": len(joined.arch_str), "key": joined.key, "notes": notes}
