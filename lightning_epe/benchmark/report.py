"""Benchmark output: a rich table in the terminal, Markdown and CSV files, PNG plots (matplotlib, optional)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from .simulation import PAPER_COLUMNS

MATPLOTLIB_MISSING = ("plots need matplotlib, an optional extra: `pip install matplotlib` "
                      "(or `pip install 'lightning-epe[plots]'`); tables were written without plots")


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pm(mean, std, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{_fmt(float(mean), digits)} ± {_fmt(float(std), digits)}"


_SHORT = {**PAPER_COLUMNS, "cifar10_valid_test_acc": "C10 valid/test"}


def _label(column: str) -> str:
    return _SHORT.get(column, column)


def write_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    """Write dict rows (same keys) to a CSV; floats keep full precision, ``None`` is empty."""
    path = Path(path)
    keys = list(rows[0]) if rows else []
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row[k] is None else row[k]) for k in keys})
    return path


def correlation_markdown(rows: Sequence[dict]) -> str:
    lines = ["| score | ground truth | Kendall tau-b | Spearman rho | cells | NaN scores |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['score']} | {r['truth']} | {_fmt(r['tau'])} | {_fmt(r['rho'])} | {r['n']} | {r['n_nan']} |")
    return "\n".join(lines)


def search_markdown(rows: Sequence[dict], score: str) -> str:
    """The paper's table layout for one score column: ours (simulated) beside the paper's numbers."""
    rows = [r for r in rows if r["score"] == score]
    columns = list(dict.fromkeys(r["column"] for r in rows))
    ns = list(dict.fromkeys(r["n"] for r in rows))
    header = ["N"]
    for c in columns:
        header.append(f"{_label(c)} ours")
        if any(r["paper_mean"] is not None for r in rows if r["column"] == c):
            header.append(f"{_label(c)} paper")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    by_key = {(r["n"], r["column"]): r for r in rows}
    for n in ns:
        cells = [str(n)]
        for c in columns:
            r = by_key[(n, c)]
            cells.append(_pm(r["mean"], r["std"]))
            if any(x["paper_mean"] is not None for x in rows if x["column"] == c):
                cells.append(_pm(r["paper_mean"], r["paper_std"]))
        lines.append("| " + " | ".join(cells) + " |")
    cells = ["best cell in table"]
    for c in columns:
        cells.append(_fmt(next(r["best"] for r in rows if r["column"] == c), 2))
        if any(x["paper_mean"] is not None for x in rows if x["column"] == c):
            cells.append("")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _draw_groups(rows: Sequence[dict]) -> tuple[list[str], dict[tuple, dict[str, dict]]]:
    """The truth columns, and the k-table rows grouped by (score, over, cells, k, rule) -> truth -> row."""
    truths = list(dict.fromkeys(r["truth"] for r in rows))
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["score"], r["over"], r["cells"], r["k"], r["rule"]), {})[r["truth"]] = r
    return truths, groups


def draws_markdown(rows: Sequence[dict]) -> str:
    """The k-table: one line per (score, over, cells, k, rule), tau / rho per ground-truth column."""
    truths, groups = _draw_groups(rows)
    header = ["score", "over", "cells", "k", "rule"] + [f"{_label(t)} tau / rho" for t in truths]
    header += ["s per cell", "cost vs k=1"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (score, over, cells, k, rule), by_truth in groups.items():
        first = next(iter(by_truth.values()))
        cells_text = [score, over, str(cells), str(k), rule]
        cells_text += [f"{_fmt(by_truth[t]['tau'])} / {_fmt(by_truth[t]['rho'])}" for t in truths]
        cells_text += [_fmt(first["seconds_per_cell"], 2), _fmt(first["cost_vs_k1"], 2)]
        lines.append("| " + " | ".join(cells_text) + " |")
    return "\n".join(lines)


def markdown_report(correlations: Sequence[dict], search: Sequence[dict], meta: dict,
                    draws: Sequence[dict] = ()) -> str:
    """The whole report as Markdown (what ``report.md`` holds)."""
    parts = ["# Benchmark report", "",
             f"Scores: `{meta.get('scores')}`; ground truth: `{meta.get('ground_truth')}`; "
             f"{meta.get('cells')} cells joined by {meta.get('key')}.", ""]
    for note in meta.get("notes", []):
        parts.append(f"- {note}")
    if correlations:
        parts += ["", "## Rank correlations", "", correlation_markdown(correlations), ""]
    if draws:
        parts += ["", "## Draws (k-table)", "",
                  "Each candidate scored k times (over batches, initialisations or both) and the draws "
                  "combined by the rule; every k of a block on the same cells.", "", draws_markdown(draws), ""]
    if search:
        runs = search[0]["runs"]
        parts += ["## Random search (simulated)", "",
                  f"{runs} runs per N, N cells drawn with replacement from the table, arg-max score kept; "
                  "mean ± std (ddof 0) of its accuracy (%). Paper: EPE-NAS's published table.", ""]
        for score in dict.fromkeys(r["score"] for r in search):
            parts += [f"### {score}", "", search_markdown(search, score), ""]
    if meta.get("plots"):
        parts += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in meta["plots"]] + [""]
    return "\n".join(parts)


def print_report(correlations: Sequence[dict], search: Sequence[dict], meta: dict, console=None) -> None:
    """Rich tables in the terminal: correlations, then the search table beside the paper's."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"Rank correlations ({meta.get('cells')} cells, joined by {meta.get('key')})")
    for name in ("score", "ground truth", "tau-b", "rho", "cells", "NaN scores"):
        table.add_column(name, justify="left" if name in {"score", "ground truth"} else "right")
    for r in correlations:
        table.add_row(r["score"], r["truth"], _fmt(r["tau"]), _fmt(r["rho"]), str(r["n"]), str(r["n_nan"]))
    if correlations:
        console.print(table)
    for note in meta.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    for score in dict.fromkeys(r["score"] for r in search):
        rows = [r for r in search if r["score"] == score]
        columns = list(dict.fromkeys(r["column"] for r in rows))
        t = Table(title=f"Random search on {score}: ours ({rows[0]['runs']} runs) / paper")
        t.add_column("N", justify="right")
        for c in columns:
            t.add_column(_label(c), justify="right", no_wrap=True, min_width=12)
        by_key = {(r["n"], r["column"]): r for r in rows}
        for n in dict.fromkeys(r["n"] for r in rows):
            cells = []
            for c in columns:
                r = by_key[(n, c)]
                text = _pm(r["mean"], r["std"])
                if r["paper_mean"] is not None:
                    text += f"\n[dim]{_pm(r['paper_mean'], r['paper_std'])}[/]"
                cells.append(text)
            t.add_row(str(n), *cells)
        console.print(t)


def print_draws(rows: Sequence[dict], console=None) -> None:
    """The k-table in the terminal (the first ground-truth column)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    truths, groups = _draw_groups(rows)
    table = Table(title=f"Draws: rank correlations with {_label(truths[0])}")
    for name in ("score", "over", "cells", "k", "rule", "tau-b", "rho", "s per cell", "cost vs k=1"):
        table.add_column(name, justify="left" if name in {"score", "over", "rule"} else "right")
    for (score, over, cells, k, rule), by_truth in groups.items():
        r = by_truth[truths[0]]
        table.add_row(score, over, str(cells), str(k), rule, _fmt(r["tau"]), _fmt(r["rho"]),
                      _fmt(r["seconds_per_cell"], 2), _fmt(r["cost_vs_k1"], 2))
    console.print(table)


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(MATPLOTLIB_MISSING) from None
    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def plot_scatter(path: str | Path, scores, truth: dict, score_name: str, correlations: dict) -> Path:
    """Score vs accuracy, one panel per ground-truth column, tau and rho in each title.

    NaN and infinite scores are drawn at the left edge as red crosses (they rank last).
    ``correlations`` maps a truth column to its :func:`rank_correlations` result.
    """
    s = np.asarray(scores, dtype=np.float64)
    columns = list(truth)
    cols = min(2, len(columns))
    nrows = math.ceil(len(columns) / cols)
    fig = _figure(4.6 * cols, 3.6 * nrows)
    finite = np.isfinite(s)
    left = float(np.min(s[finite])) if finite.any() else 0.0
    span = float(np.max(s[finite]) - left) if finite.any() else 1.0
    for k, c in enumerate(columns):
        t = np.asarray(truth[c], dtype=np.float64)
        ax = fig.add_subplot(nrows, cols, k + 1)
        ax.scatter(s[finite], t[finite], s=5, alpha=0.5, linewidths=0)
        if (~finite).any():
            ax.scatter(np.full(int((~finite).sum()), left - 0.05 * (span or 1.0)), t[~finite], s=12, marker="x",
                       color="tab:red", label=f"NaN/inf score ({int((~finite).sum())}), ranked last")
            ax.legend(loc="lower right", fontsize=7)
        r = correlations[c]
        ax.set_title(f"{_label(c)}: tau-b {r['tau']:.3f}, rho {r['rho']:.3f} (n={r['n']})", fontsize=9)
        ax.set_xlabel(score_name)
        ax.set_ylabel(f"{c} (%)", fontsize=8)
        ax.grid(alpha=0.3)
    fig.savefig(path)
    return Path(path)


def plot_search(path: str | Path, rows: Sequence[dict], score: str) -> Path:
    """Accuracy of the searched cell vs N, ours (mean ± std) beside the paper's points, one panel per column."""
    rows = [r for r in rows if r["score"] == score]
    columns = list(dict.fromkeys(r["column"] for r in rows))
    cols = 2 if len(columns) in (2, 4) else min(3, len(columns))
    nrows = math.ceil(len(columns) / cols)
    fig = _figure(4.0 * cols, 3.2 * nrows)
    for k, c in enumerate(columns):
        ax = fig.add_subplot(nrows, cols, k + 1)
        part = sorted((r for r in rows if r["column"] == c), key=lambda r: r["n"])
        ns = np.array([r["n"] for r in part], dtype=float)
        ax.errorbar(ns, [r["mean"] for r in part], yerr=[r["std"] for r in part], marker="o", capsize=3,
                    label=f"ours ({part[0]['runs']} runs)")
        paper = [r for r in part if r["paper_mean"] is not None]
        if paper:
            ax.errorbar(np.array([r["n"] for r in paper], dtype=float) * 1.08, [r["paper_mean"] for r in paper],
                        yerr=[r["paper_std"] for r in paper], marker="s", linestyle="none", capsize=3,
                        color="tab:orange", label="paper (3 runs)")
        ax.axhline(part[0]["best"], color="grey", linestyle=":", label="best cell in table")
        ax.set_xscale("log")
        ax.set_xlabel("N (cells scored)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(_label(c), fontsize=9)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Random search with {score}", fontsize=10)
    fig.savefig(path)
    return Path(path)
