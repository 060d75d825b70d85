"""Benchmark output: a rich table in the terminal, Markdown and CSV files, PNG plots (matplotlib, optional)."""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
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


@dataclass
class Column:
    """One column of a :class:`ReportTable`.

    ``header`` heads it in Markdown, ``console`` in the terminal (default: ``header``). A column
    may be left out of one of the two (``in_markdown``, ``in_console``), or shown in the terminal
    dim under the value of the column before it (``under``). ``empty`` is what Markdown writes for
    a missing value (``None``); the terminal writes nothing. The ``key`` column is never folded or
    squeezed out of a narrow terminal (``no_wrap``, ``min_width``: its widest cell); the others fold.
    """

    header: str
    console: str | None = None
    justify: str = "right"
    in_markdown: bool = True
    in_console: bool = True
    under: bool = False
    empty: str = ""
    key: bool = False


@dataclass
class ReportTable:
    """A table of the report, built once and rendered as Markdown (``report.md``) or for the terminal (rich).

    ``columns``: :class:`Column` s, or plain headers. Rows hold one text (or ``None``) per column.
    ``title`` is the terminal's (in Markdown the report's headings say it); ``caption`` is a
    paragraph above the table and ``footer`` a last row, both in Markdown only.
    """

    title: str
    columns: list[Column | str]
    rows: list[list[str | None]] = field(default_factory=list)
    caption: str = ""
    footer: list[str | None] | None = None

    def __post_init__(self):
        self.columns = [c if isinstance(c, Column) else Column(str(c)) for c in self.columns]

    def to_markdown(self) -> str:
        shown = [(i, c) for i, c in enumerate(self.columns) if c.in_markdown]
        lines = [self.caption, ""] if self.caption else []
        lines += ["| " + " | ".join(c.header for _, c in shown) + " |", "|" + "---|" * len(shown)]
        for row in self.rows + ([self.footer] if self.footer is not None else []):
            lines.append("| " + " | ".join(c.empty if row[i] is None else row[i] for i, c in shown) + " |")
        return "\n".join(lines)

    def to_rich(self):
        from rich.cells import cell_len
        from rich.table import Table

        groups: list[list[int]] = []  # a terminal column: its column, then those shown under it
        for i, c in enumerate(self.columns):
            if c.under and groups:
                groups[-1].append(i)
            elif c.in_console and not c.under:
                groups.append([i])
        table = Table(title=self.title)
        for group in groups:
            c = self.columns[group[0]]
            header = c.header if c.console is None else c.console
            if c.key:
                widest = max([cell_len(header)] + [cell_len(r[group[0]] or "") for r in self.rows])
                table.add_column(header, justify=c.justify, no_wrap=True, min_width=widest)
            else:
                table.add_column(header, justify=c.justify, overflow="fold")
        for row in self.rows:
            table.add_row(*("".join([row[g[0]] or ""] + [f"\n[dim]{row[i]}[/]" for i in g[1:] if row[i] is not None])
                            for g in groups))
        return table


def n_warning(ns: Sequence[int], cells: int) -> str | None:
    """What to say when a simulated search size N exceeds the table's cells (``None`` when none does)."""
    over = [int(n) for n in ns if int(n) > cells]
    if not over:
        return None
    return (f"N = {', '.join(map(str, over))} (marked *) exceed the table's {cells} cells: a simulated search draws "
            f"its N cells with replacement from the table, so it finds the table's best-scored cell in (almost) every "
            f"run (hence ± 0.00), and those rows say nothing about a search of N cells in the whole space. Score at "
            f"least N cells, or simulate N <= {cells} (--ns)")


def correlation_table(rows: Sequence[dict], meta: dict | None = None) -> ReportTable:
    """Kendall tau-b and Spearman rho of every (score, ground-truth column).

    The terminal names the ground-truth columns by their short labels (``C10 val``), Markdown in full."""
    meta = meta or {}
    return ReportTable(
        f"Rank correlations ({meta.get('cells')} cells, joined by {meta.get('key')})",
        [Column("score", justify="left", key=True), Column("ground truth", justify="left", in_console=False),
         Column("ground truth", justify="left", in_markdown=False, key=True),
         Column("Kendall tau-b", "tau-b"), Column("Spearman rho", "rho"), Column("cells"), Column("NaN scores")],
        [[r["score"], r["truth"], _label(r["truth"]), _fmt(r["tau"]), _fmt(r["rho"]), str(r["n"]), str(r["n_nan"])]
         for r in rows])


def search_table(rows: Sequence[dict], score: str, cells: int | None = None) -> ReportTable:
    """The paper's table for one score column: ours (simulated) beside the paper's numbers, per N.

    Markdown: an "ours" and (where the paper has the column) a "paper" column per ground-truth
    column, and the best cell of the table; the terminal shows the paper's value dim under ours.
    With the table's number of ``cells``, an N larger than it is marked ``N*`` (see :func:`n_warning`).
    """
    rows = [r for r in rows if r["score"] == score]
    columns = list(dict.fromkeys(r["column"] for r in rows))
    has_paper = {c: any(r["paper_mean"] is not None for r in rows if r["column"] == c) for c in columns}
    spec = [Column("N", key=True)]
    for c in columns:
        spec.append(Column(f"{_label(c)} ours", _label(c)))
        if has_paper[c]:
            spec.append(Column(f"{_label(c)} paper", under=True, empty="-"))
    by_key = {(r["n"], r["column"]): r for r in rows}
    table = ReportTable(f"Random search on {score}: ours ({rows[0]['runs']} runs) / paper", spec)
    for n in dict.fromkeys(r["n"] for r in rows):
        row = [f"{n}*" if cells is not None and n > cells else str(n)]
        for c in columns:
            r = by_key[(n, c)]
            row.append(_pm(r["mean"], r["std"]))
            if has_paper[c]:
                row.append(None if r["paper_mean"] is None else _pm(r["paper_mean"], r["paper_std"]))
        table.rows.append(row)
    table.footer = ["best cell in table"]
    for c in columns:
        table.footer.append(_fmt(next(r["best"] for r in rows if r["column"] == c), 2))
        if has_paper[c]:
            table.footer.append("")
    return table


def draws_k_table(rows: Sequence[dict]) -> ReportTable:
    """The k-table: one line per (score, over, cells, k, rule).

    Markdown: tau / rho for every ground-truth column; the terminal: tau-b and rho for the first.
    """
    truths = list(dict.fromkeys(r["truth"] for r in rows))
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        groups.setdefault((r["score"], r["over"], r["cells"], r["k"], r["rule"]), {})[r["truth"]] = r
    spec = [Column("score", justify="left", key=True), Column("over", justify="left", key=True),
            Column("cells"), Column("k", key=True), Column("rule", justify="left", key=True)]
    spec += [Column(f"{_label(t)} tau / rho", in_console=False) for t in truths]
    spec += [Column("tau-b", in_markdown=False), Column("rho", in_markdown=False),
             Column("s per cell"), Column("cost vs k=1")]
    table = ReportTable(f"Draws: rank correlations with {_label(truths[0])}", spec,
                        caption="Each candidate scored k times (over batches, initialisations or both) and the "
                                "draws combined by the rule; every k of a block on the same cells.")
    for (score, over, cells, k, rule), by_truth in groups.items():
        first = next(iter(by_truth.values()))
        table.rows.append([score, over, str(cells), str(k), rule,
                           *(f"{_fmt(by_truth[t]['tau'])} / {_fmt(by_truth[t]['rho'])}" for t in truths),
                           _fmt(by_truth[truths[0]]["tau"]), _fmt(by_truth[truths[0]]["rho"]),
                           _fmt(first["seconds_per_cell"], 2), _fmt(first["cost_vs_k1"], 2)])
    return table


def markdown_report(correlations: Sequence[dict], search: Sequence[dict], meta: dict,
                    draws: Sequence[dict] = ()) -> str:
    """The whole report as Markdown (what ``report.md`` holds)."""
    parts = ["# Benchmark report", "",
             f"Scores: `{meta.get('scores')}`; ground truth: `{meta.get('ground_truth')}`; "
             f"{meta.get('cells')} cells joined by {meta.get('key')}.", ""]
    for note in meta.get("notes", []):
        parts.append(f"- {note}")
    if correlations:
        parts += ["", "## Rank correlations", "", correlation_table(correlations).to_markdown(), ""]
    if draws:
        parts += ["", "## Draws (k-table)", "", draws_k_table(draws).to_markdown(), ""]
    if search:
        runs = search[0]["runs"]
        parts += ["## Random search (simulated)", "",
                  f"{runs} runs per N, N cells drawn with replacement from the table, arg-max score kept; "
                  "mean ± std (ddof 0) of its accuracy (%). Paper: EPE-NAS's published table.", ""]
        for score in dict.fromkeys(r["score"] for r in search):
            parts += [f"### {score}", "", search_table(search, score, meta.get("cells")).to_markdown(), ""]
    if meta.get("plots"):
        parts += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in meta["plots"]] + [""]
    return "\n".join(parts)


def print_report(correlations: Sequence[dict], search: Sequence[dict], meta: dict, console=None) -> None:
    """Rich tables in the terminal: correlations, then the search table beside the paper's."""
    from rich.console import Console

    console = console or Console()
    if correlations:
        console.print(correlation_table(correlations, meta).to_rich())
    for note in meta.get("notes", []):
        console.print(f"[yellow]note:[/] {note}")
    for score in dict.fromkeys(r["score"] for r in search):
        console.print(search_table(search, score, meta.get("cells")).to_rich())


def print_draws(rows: Sequence[dict], console=None) -> None:
    """The k-table in the terminal (the first ground-truth column)."""
    from rich.console import Console

    (console or Console()).print(draws_k_table(rows).to_rich())


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
