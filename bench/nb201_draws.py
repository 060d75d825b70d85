"""EPE over several batches and initialisations of the committed NB201 cells (the draws benchmark).

Writes one row per cell with the per-draw scores that ``lightning-epe benchmark`` turns into the
k-table (tau/rho for k in 1, 2, 4, 8 draws over batches, inits and both, combined by mean, median
and rank) and the ``epe_k4`` column of docs/benchmarks/nb201_cifar10.csv. The draws are those of
``lightning_epe.scores.score_draws`` (the test suite recomputes committed rows with it):

* cells: the committed sample (``nb201_table.sample_cells``), seed = NB201 index, C=16, N=5,
  10 classes, train mode, ``epe_score`` default path, class_count "official";
* batch j (j = 0..7): 128 rows of ``cifar10_sample.npz`` starting at row 128 * (j + 1), taken
  modulo 1,000 (batches 0..3 are rows 128-639; 6 and 7 wrap around to the first rows);
* ``epe@b<j>``: initialisation 0 on batch j (draws over batches);
* ``epe@i<j>``: initialisation j (``draw_seed(index, j)``) on batch 0 (draws over inits);
* ``epe@d<j>``: initialisation j on batch j (draws over both); draw 0 of every kind is ``epe@b0``;
* ``seconds_build`` / ``seconds_score``: median seconds to build one network / score one draw.

Every cell gets batches 0..``--batches``-1; the first ``--full-cells`` cells of the sample get
all 8 batches, 8 inits and 8 paired draws. The other cells are scored first, so the committed
epe_k4 column is complete before the k = 8 subset. Resumable and shardable like nb201_table.py::

    python bench/nb201_draws.py --out docs/benchmarks/nb201_cifar10_draws.csv --shard 0/2 &
    python bench/nb201_draws.py --out docs/benchmarks/nb201_cifar10_draws.csv --shard 1/2
    python bench/nb201_draws.py k4 --draws docs/benchmarks/nb201_cifar10_draws.csv \
        --table docs/benchmarks/nb201_cifar10.csv --combine mean   # adds/updates epe_k4
    python bench/nb201_draws.py report    # the k-table (lightning-epe benchmark) + noise and bootstrap

``report`` runs ``run_benchmark`` on the draws CSV (``nb201_cifar10_k_report.md``,
``nb201_cifar10_k_draws.csv``) and writes ``nb201_cifar10_k_noise.md``: how well single draws agree
with each other (batch vs batch, init vs init) and, for every k-table line, the change of tau with
CIFAR-10 validation accuracy against k = 1 on the same cells with a paired bootstrap 95% interval.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch
from _common import CIFAR10_SAMPLE, NB201_TRUTH, CsvAppender, kendall_tau_b, load_batch, read_rows, replace_csv
from nb201_table import sample_cells

from lightning_epe.benchmark.draws import DRAW_COLUMN, KINDS
from lightning_epe.scores import Draws, draw_seed, epe_score, seeded
from lightning_epe.spaces import NB201Space

MAX_DRAWS = 8
ROWS = 128


def load_batches(path: str, count: int = MAX_DRAWS) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batch j: rows 128 * (j + 1) ... + 127 of the sample, modulo its length, CIFAR-10 normalised."""
    return [load_batch(path, ROWS, start=ROWS * (j + 1)) for j in range(count)]


def draw_columns(batches: int, inits: int) -> list[str]:
    """``batches`` draws over batches, and ``inits`` draws over inits and over both (draw 0 is ``epe@b0``)."""
    return ([f"epe@b{j}" for j in range(batches)]
            + [f"epe@{kind}{j}" for kind in "id" for j in range(1, inits)])


DRAW_COLUMNS = draw_columns(MAX_DRAWS, MAX_DRAWS)
FIELDS = ["index", "arch_str", "seed", *DRAW_COLUMNS, "seconds_build", "seconds_score"]


def init_and_batch(column: str) -> tuple[int, int]:
    """The initialisation and the batch of a draw column, as ``Draws`` defines them (b<j>: (0, j), ...)."""
    match = DRAW_COLUMN.match(column)
    j = int(match["draw"])
    draws = Draws(k=j + 1, over=KINDS[match["kind"]])
    return draws.init_of(j), draws.batch_of(j)


def score_cell(space: NB201Space, index: int, batches, columns: list[str]) -> dict:
    """The draws ``columns`` of one cell (each initialisation built once) and the median seconds."""
    build_s, score_s, row = [], [], {}
    for init in sorted({init_and_batch(c)[0] for c in columns}):
        start = time.perf_counter()
        with seeded(draw_seed(index, init)):
            model = space.build(index, num_classes=10, C=16, N=5)
        model.train()
        build_s.append(time.perf_counter() - start)
        for column in (c for c in columns if init_and_batch(c)[0] == init):
            start = time.perf_counter()
            row[column] = epe_score(model, *batches[init_and_batch(column)[1]])
            score_s.append(time.perf_counter() - start)
    row["seconds_build"] = statistics.median(build_s)
    row["seconds_score"] = statistics.median(score_s)
    return row


def filled_columns(rows: list[dict]) -> dict[int, set[str]]:
    """Per cell, the draw columns some row of it holds (a cell may have several rows before ``merge``)."""
    filled: dict[int, set[str]] = {}
    for row in rows:
        filled.setdefault(int(row["index"]), set()).update(c for c in DRAW_COLUMNS if row.get(c))
    return filled


def merge(argv: list[str]) -> int:
    """Fold the rows of each cell into one, in sample order (after runs that added draws to scored cells)."""
    p = argparse.ArgumentParser(prog="nb201_draws.py merge")
    p.add_argument("--out", default="docs/benchmarks/nb201_cifar10_draws.csv")
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--sample-seed", type=int, default=0)
    args = p.parse_args(argv)
    merged: dict[int, dict] = {}
    for row in read_rows(args.out):
        into = merged.setdefault(int(row["index"]), {k: row[k] for k in FIELDS})
        for column in DRAW_COLUMNS:
            if row[column] and into[column] and row[column] != into[column]:
                raise SystemExit(f"cell {row['index']}: two different values of {column}")
            into[column] = into[column] or row[column]
    order = {index: k for k, index in enumerate(sample_cells(args.cells, args.sample_seed))}
    replace_csv(args.out, FIELDS, sorted(merged.values(), key=lambda r: order.get(int(r["index"]), len(order))))
    print(f"{args.out}: {len(merged)} cells")
    return 0


def _fmt(value) -> str:
    return "" if value is None else repr(float(value))


def add_k4(argv: list[str]) -> int:
    """Add (or replace) the ``epe_k4`` column of the committed table: draws b0..b3 combined."""
    p = argparse.ArgumentParser(prog="nb201_draws.py k4")
    p.add_argument("--draws", default="docs/benchmarks/nb201_cifar10_draws.csv")
    p.add_argument("--table", default="docs/benchmarks/nb201_cifar10.csv")
    p.add_argument("--combine", choices=("mean", "median", "rank"), default="mean")
    args = p.parse_args(argv)
    draws = {int(r["index"]): [float(r[f"epe@b{j}"] or "nan") for j in range(4)] for r in read_rows(args.draws)}
    rows = read_rows(args.table)
    if not rows:
        print(f"{args.table} has no cells")
        return 1
    fields = [c for c in rows[0] if c != "epe_k4"] + ["epe_k4"]
    missing = [r["index"] for r in rows if int(r["index"]) not in draws]
    if missing:
        print(f"{len(missing)} cells of {args.table} have no draws in {args.draws} (first: {missing[:5]})")
        return 1
    rule = Draws(k=4, over="batches", combine=args.combine)
    if rule.relative:
        from lightning_epe.scores import rank_draws

        values = rank_draws([draws[int(r["index"])] for r in rows])
    else:
        values = [rule.combine_values(draws[int(r["index"])]) for r in rows]
    for row, value in zip(rows, values):
        row["epe_k4"] = repr(float(value))
    replace_csv(args.table, fields, rows)
    print(f"epe_k4 ({args.combine} of draws b0..b3) written for {len(rows)} cells of {args.table}")
    return 0


def _search_outcome(joined, series) -> list[str]:
    """Expected C10 test accuracy of the cell a random search of N cells picks, single draws vs k = 4."""
    from lightning_epe.benchmark import expected_random_search
    from lightning_epe.benchmark.draws import combine

    acc = joined.truth["cifar10_test_acc"]
    ns = (10, 100, 1000)
    cells = np.logical_and.reduce([joined.has_value(c) for names in series.values() for c in names[:4]])
    md = ["", f"## The search table: expected C10 test accuracy of the searched cell ({int(cells.sum())} cells)", "",
          "Exact expectation (closed form) of the paper's random search (N cells drawn with replacement, arg-max "
          "kept) on these cells. It depends on the few top-scored cells, so it moves far more between single "
          "draws than tau does.", "", "| scores | " + " | ".join(f"N = {n}" for n in ns) + " |",
          "|---|" + "---|" * len(ns)]
    singles = sorted({c for names in series.values() for c in names[:4]})
    outcome = {c: [expected_random_search(joined.scores[c][cells], acc[cells], n)[0] for n in ns] for c in singles}
    md.append(f"| single draws ({len(singles)}: {', '.join(singles)}), min - max | "
              + " | ".join(f"{min(o[i] for o in outcome.values()):.2f} - {max(o[i] for o in outcome.values()):.2f}"
                           for i in range(len(ns))) + " |")
    for over in ("batches", "inits", "both"):
        for k in (2, 4):
            values = combine(np.stack([joined.scores[c][cells] for c in series[("epe", over)][:k]], axis=1), "mean")
            md.append(f"| mean of {k} draws over {over} | "
                      + " | ".join(f"{expected_random_search(values, acc[cells], n)[0]:.2f}" for n in ns) + " |")
    return md


def report(argv: list[str]) -> int:
    """The k-table, the agreement between single draws, and bootstrap intervals (see the module docstring)."""
    from nb201_table import TRUTH_COLUMNS

    from lightning_epe.benchmark import draw_series, join, load_ground_truth, read_scores, run_benchmark
    from lightning_epe.benchmark.draws import combine

    p = argparse.ArgumentParser(prog="nb201_draws.py report")
    p.add_argument("--draws", default="docs/benchmarks/nb201_cifar10_draws.csv")
    p.add_argument("--truth", default=NB201_TRUTH)
    p.add_argument("--dir", default="docs/benchmarks")
    p.add_argument("--resamples", type=int, default=1000)
    args = p.parse_args(argv)
    result = run_benchmark(args.draws, args.truth, args.dir, truth_columns=TRUTH_COLUMNS, plots=False,
                           prefix="nb201_cifar10_k_")
    joined = join(read_scores(args.draws), load_ground_truth(args.truth, TRUTH_COLUMNS))
    acc = joined.truth["cifar10_valid_acc"]
    series = draw_series(list(joined.scores))
    full = np.logical_and.reduce([joined.has_value(c) for names in series.values() for c in names])
    md = ["# Draws: noise of single draws and bootstrap intervals", "",
          f"Generated by `python bench/nb201_draws.py report` from `{args.draws}`.", "",
          f"## Agreement between single draws ({int(full.sum())} cells with every draw)", "",
          "Kendall tau-b between the EPE rankings of the same cells under two draws (mean over pairs).", "",
          "| draws compared | pairs | mean tau-b | min | max |", "|---|---|---|---|---|"]
    for over, label in (("batches", "batch j vs batch j' (same initialisation)"),
                        ("inits", "initialisation j vs j' (same batch)"), ("both", "draw j vs j' (batch and init)")):
        names = series[("epe", over)]
        taus = [kendall_tau_b(joined.scores[a][full], joined.scores[b][full])
                for i, a in enumerate(names) for b in names[i + 1:]]
        md.append(f"| {label} | {len(taus)} | {np.mean(taus):.3f} | {min(taus):.3f} | {max(taus):.3f} |")
    md += ["", "## Reproducibility of a k-draw ranking", "",
           "Kendall tau-b between the rankings given by two disjoint groups of k draws (draws 0..k-1 vs "
           "k..2k-1, and so on; mean over the disjoint pairs of groups), each group combined by its mean: "
           "how much a ranking changes when the whole scoring is rerun with other batches/initialisations.", "",
           "| over | k = 1 | k = 2 | k = 4 |", "|---|---|---|---|"]
    for over in ("batches", "inits", "both"):
        names = series[("epe", over)]
        values = np.stack([joined.scores[c][full] for c in names], axis=1)
        cells = []
        for k in (1, 2, 4):
            groups = [combine(values[:, g * k:(g + 1) * k], "mean") for g in range(len(names) // k)]
            cells.append(np.mean([kendall_tau_b(groups[g], groups[g + 1]) for g in range(0, len(groups) - 1, 2)]))
        md.append(f"| {over} | " + " | ".join(f"{t:.3f}" for t in cells) + " |")
    md += _search_outcome(joined, series)
    rng = np.random.default_rng(0)
    md += ["", "## Change of tau (C10 val) against k = 1 on the same cells", "",
           f"Paired bootstrap over cells ({args.resamples} resamples): the same resampled cells for k and k = 1.", "",
           "| over | cells | k | rule | tau | tau k=1 | change | 95% interval |", "|---|---|---|---|---|---|---|---|"]
    lines = [(r["over"], r["cells"], r["k"], r["rule"]) for r in result["draws"] if r["truth"] == "cifar10_valid_acc"]
    for over, cells, k, rule in lines:
        if k == 1:
            continue
        names = series[("epe", over)]
        masks = [np.logical_and.reduce([joined.has_value(c) for c in names[:top]]) for top in range(k, len(names) + 1)]
        mask = next(m for m in masks if int(m.sum()) == cells)  # the cells of this line's block (nested sets)
        values = np.stack([joined.scores[c][mask] for c in names[:k]], axis=1)
        combined, single, truth = combine(values, rule), values[:, 0], acc[mask]
        boot = []
        for _ in range(args.resamples):
            pick = rng.integers(0, cells, cells)
            boot.append(kendall_tau_b(combined[pick], truth[pick]) - kendall_tau_b(single[pick], truth[pick]))
        lo, hi = np.percentile(boot, [2.5, 97.5])
        base = kendall_tau_b(single, truth)
        md.append(f"| {over} | {cells} | {k} | {rule} | {kendall_tau_b(combined, truth):.3f} | {base:.3f} | "
                  f"{kendall_tau_b(combined, truth) - base:+.3f} | [{lo:+.3f}, {hi:+.3f}] |")
    path = os.path.join(args.dir, "nb201_cifar10_k_noise.md")
    with open(path, "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["k4"]:
        return add_k4(argv[1:])
    if argv[:1] == ["report"]:
        return report(argv[1:])
    if argv[:1] == ["merge"]:
        return merge(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/benchmarks/nb201_cifar10_draws.csv")
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--full-cells", type=int, default=200,
                   help=f"cells (a prefix of the sample) with {MAX_DRAWS} draws of every kind")
    p.add_argument("--batches", type=int, default=4, help="draws over batches for every cell")
    p.add_argument("--inits", type=int, default=1, help="draws over inits and over both for every cell")
    p.add_argument("--data", default=CIFAR10_SAMPLE)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--shard", default="0/1", help="K/N: the cells at positions = K mod N (see nb201_table.py)")
    args = p.parse_args(argv)
    shard, shards = (int(v) for v in args.shard.split("/"))
    if not 0 <= shard < shards:
        p.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")
    if not (1 <= args.batches <= MAX_DRAWS and 1 <= args.inits <= MAX_DRAWS):
        p.error(f"--batches and --inits must be in 1..{MAX_DRAWS}")
    torch.set_num_threads(args.threads)
    batches = load_batches(args.data)
    space = NB201Space()
    sample = sample_cells(args.cells, args.sample_seed)
    filled = filled_columns(read_rows(args.out))
    every, full = draw_columns(args.batches, args.inits), DRAW_COLUMNS
    todo = []  # (index, missing columns): the cells beyond the full prefix first (they make epe_k4)
    for position in list(range(args.full_cells, len(sample))) + list(range(min(args.full_cells, len(sample)))):
        index = sample[position]
        wanted = full if position < args.full_cells else every
        missing = [c for c in wanted if c not in filled.get(index, set())]
        if missing and position % shards == shard:
            todo.append((index, missing))
    print(f"{args.out}: {len(todo)} cells to score in shard {args.shard}", flush=True)
    start = time.perf_counter()
    with CsvAppender(args.out, FIELDS) as out:
        for n, (index, missing) in enumerate(todo, start=1):
            row = score_cell(space, index, batches, missing)
            out.append({"index": index, "arch_str": space.arch(index), "seed": index,
                        **{k: _fmt(row.get(k)) for k in FIELDS[3:]}})
            elapsed = time.perf_counter() - start
            print(f"[{n}/{len(todo)}] index {index}: {len(missing)} draws "
                  f"({elapsed:.0f}s, ETA {elapsed / n * (len(todo) - n):.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
