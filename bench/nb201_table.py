"""Score a uniform sample of NAS-Bench-201 cells with EPE-NAS on one fixed CIFAR-10 batch.

The recipe (docs/benchmarks/README.md states it; any row is reproducible from it alone):

* cells: ``numpy.random.default_rng(sample_seed).permutation(15625)[:cells]`` (uniform, without
  replacement; any prefix of a longer run is the shorter run's sample);
* batch: the first ``batch`` rows of ``cifar10_sample.npz``: ``x`` uint8 HWC -> float32 NCHW / 255,
  then ``(x - mean) / std`` per channel with the CIFAR-10 mean (0.4914, 0.4822, 0.4465) and std
  (0.2470, 0.2435, 0.2616); labels ``y`` as int64;
* per row: ``seed`` = the cell's NB201 index; ``torch.manual_seed(seed)``, then
  ``NB201Space().build(index, num_classes=10, C=16, N=5)``, ``model.train()``, then
  ``epe_score(model, x, y, reference=...)`` (class_count "official").

``--mode`` picks the score column: ``reference`` -> ``epe`` (float32 network, official computation),
``default`` -> ``epe_default`` (float32 network, reference=False), ``float64`` -> ``epe_float64``
(``model.double()`` and float64 inputs, reference=True).

``report`` (first argument) regenerates everything under docs/benchmarks from the CSVs: the
benchmark of each score file (``lightning_epe.benchmark.run_benchmark``), the precision comparison
on the cells the three files share, and the comparison with NAS-Bench-Suite-Zero's epe_nas::

    python bench/nb201_table.py report --dir docs/benchmarks \
        --truth ../shared/data/nb201/nb201_accuracies.csv --zc ../shared/data/nb201/zc_nasbench201_subset.csv

Resumable: rows are appended and flushed one by one; indices already in ``--out`` are skipped, so
re-running the same command continues where it stopped. Example::

    python bench/nb201_table.py --out docs/benchmarks/nb201_cifar10.csv --cells 1000 \
        --sample-seed 0 --data ../shared/data/cifar10/cifar10_sample.npz --batch 128 --mode reference
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import numpy as np
import torch

from lightning_epe.scores import epe_score
from lightning_epe.spaces import NB201Space

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
COLUMNS = {"reference": "epe", "default": "epe_default", "float64": "epe_float64"}
SPACE_SIZE = 15625


def load_batch(path: str, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed scoring batch: first ``batch`` rows, scaled to [0, 1], CIFAR-10 normalised."""
    data = np.load(path)
    x = torch.from_numpy(data["x"][:batch]).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    x = ((x - mean) / std).contiguous()
    y = torch.from_numpy(data["y"][:batch]).to(torch.int64)
    return x, y


def sample_cells(cells: int, sample_seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(sample_seed).permutation(SPACE_SIZE)[:cells]]


def score_cell(space: NB201Space, index: int, seed: int, x: torch.Tensor, y: torch.Tensor, mode: str) -> float:
    torch.manual_seed(seed)
    model = space.build(index, num_classes=10, C=16, N=5)
    model.train()
    if mode == "float64":
        model.double()
        return epe_score(model, x.double(), y, reference=True)
    return epe_score(model, x, y, reference=(mode == "reference"))


def done_indices(path: str) -> set[int]:
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set()
    with open(path, newline="") as f:
        return {int(row["index"]) for row in csv.DictReader(f) if row.get("index")}


TRUTH_COLUMNS = ["cifar10_valid_acc", "cifar10_test_acc", "cifar100_test_acc", "imagenet16_120_test_acc"]


def _read(path: str, column: str) -> dict[int, tuple[str, str, float]]:
    with open(path, newline="") as f:
        return {int(r["index"]): (r["arch_str"], r.get("seed", ""), float(r[column])) for r in csv.DictReader(f)}


def _corr_md(rows: list[dict]) -> list[str]:
    lines = ["| score | ground truth | tau-b | rho | cells | NaN |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['score']} | {r['truth']} | {r['tau']:.3f} | {r['rho']:.3f} | {r['n']} | {r['n_nan']} |"
              for r in rows]
    return lines


def report(argv: list[str]) -> int:
    """Regenerate the benchmark files, the precision and the peer comparison (see the module docstring)."""
    import tempfile

    from lightning_epe.benchmark import rank_correlations, run_benchmark

    p = argparse.ArgumentParser(prog="nb201_table.py report")
    p.add_argument("--dir", default="docs/benchmarks")
    p.add_argument("--truth", default="../shared/data/nb201/nb201_accuracies.csv")
    p.add_argument("--zc", default="../shared/data/nb201/zc_nasbench201_subset.csv")
    p.add_argument("--runs", type=int, default=500)
    args = p.parse_args(argv)
    d = args.dir
    main_csv, default_csv, f64_csv = (os.path.join(d, f"nb201_cifar10{s}.csv") for s in ("", "_default", "_float64"))
    run_benchmark(main_csv, args.truth, d, truth_columns=TRUTH_COLUMNS, runs=args.runs, prefix="nb201_cifar10_")
    if os.path.exists(default_csv):
        run_benchmark(default_csv, args.truth, d, truth_columns=TRUTH_COLUMNS, runs=args.runs, plots=False,
                      prefix="nb201_cifar10_default_")
    md = ["# Numerical precision and peer comparison", "",
          "Generated by `python bench/nb201_table.py report`; see README.md for the discussion.", ""]
    if os.path.exists(f64_csv) and os.path.exists(default_csv):
        ref, dflt, f64 = _read(main_csv, "epe"), _read(default_csv, "epe_default"), _read(f64_csv, "epe_float64")
        common = [i for i in f64 if i in ref and i in dflt]
        merged = os.path.join(d, "nb201_cifar10_precision.csv")
        with open(merged, "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["index", "arch_str", "seed", "epe", "epe_default", "epe_float64"])
            for i in common:
                w.writerow([i, ref[i][0], ref[i][1], repr(ref[i][2]), repr(dflt[i][2]), repr(f64[i][2])])
        result = run_benchmark(merged, args.truth, d, truth_columns=TRUTH_COLUMNS, runs=args.runs, plots=False,
                               prefix="nb201_cifar10_precision_")
        e64 = np.array([f64[i][2] for i in common])
        md += [f"## Float32 vs float64 on the same {len(common)} cells", ""]
        md += ["| float32 path | median rel. error vs float64 | max rel. error | tau-b vs float64 ranking | "
               "NaN where float64 is finite |", "|---|---|---|---|---|"]
        for name, src in (("epe (reference=True)", ref), ("epe_default (reference=False)", dflt)):
            e32 = np.array([src[i][2] for i in common])
            ok = np.isfinite(e32) & np.isfinite(e64)
            rel = np.abs(e32[ok] - e64[ok]) / np.abs(e64[ok])
            tau = rank_correlations(e32, e64)["tau"]
            extra_nan = int((~np.isfinite(e32) & np.isfinite(e64)).sum())
            md.append(f"| {name} | {np.median(rel):.2e} | {rel.max():.2e} | {tau:.4f} | {extra_nan} |")
        md += ["", "Rank correlations with the ground truth on these cells:", ""] + _corr_md(result["correlations"])
        md.append("")
    if args.zc and os.path.exists(args.zc):
        with tempfile.TemporaryDirectory() as tmp:
            zc = os.path.join(tmp, "zc_cifar10.csv")
            with open(args.zc, newline="") as f, open(zc, "w", newline="") as g:
                w = csv.writer(g, lineterminator="\n")
                w.writerow(["index", "arch_str", "epe_nas", "val_accuracy"])
                for r in csv.DictReader(f):
                    if r["dataset"] == "cifar10":
                        w.writerow([r["index"], r["arch_str"], r["epe_nas"], r["val_accuracy"]])
            peer = run_benchmark(zc, args.truth, tmp, score_columns=["epe_nas"], truth_columns=TRUTH_COLUMNS,
                                 runs=args.runs, plots=False)
            theirs = _read(zc, "epe_nas")
        ours = _read(main_csv, "epe")
        overlap = sorted(set(theirs) & set(ours))
        md += [f"## NAS-Bench-Suite-Zero epe_nas (CIFAR-10 rows, {peer['cells']} cells)", ""]
        md += _corr_md(peer["correlations"])
        if len(overlap) >= 2:
            r = rank_correlations([ours[i][2] for i in overlap], [theirs[i][2] for i in overlap])
            md += ["", f"Cells in both our sample and theirs: {len(overlap)}; rank agreement of our epe with their "
                       f"epe_nas on them: tau-b {r['tau']:.3f}, rho {r['rho']:.3f} ({r['n_nan']} NaN in ours)."]
        with open(args.zc, newline="") as f:
            zc_rows = list(csv.DictReader(f))
        md += ["", "Their epe_nas per data set against their own `val_accuracy` column (each data set scored on "
                   "its own batch by NASLib's port):", "", "| data set | cells | tau-b | rho |", "|---|---|---|---|"]
        for dataset in dict.fromkeys(r["dataset"] for r in zc_rows):
            part = [r for r in zc_rows if r["dataset"] == dataset]
            r = rank_correlations([float(x["epe_nas"] or "nan") for x in part],
                                  [float(x["val_accuracy"] or "nan") for x in part])
            md.append(f"| {dataset} | {r['n']} | {r['tau']:.3f} | {r['rho']:.3f} |")
        md.append("")
    with open(os.path.join(d, "nb201_cifar10_precision_and_peers.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["report"]:
        return report(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="CSV to create or extend")
    p.add_argument("--cells", type=int, default=1000)
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--data", default="../shared/data/cifar10/cifar10_sample.npz")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--mode", choices=sorted(COLUMNS), default="reference")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--shard", default="0/1", help="K/N: score only the cells at positions = K mod N of the "
                   "sample, so N processes can extend the same CSV at once (rows are then not in sample order)")
    args = p.parse_args(argv)
    shard, shards = (int(v) for v in args.shard.split("/"))
    if not 0 <= shard < shards:
        p.error(f"--shard must be K/N with 0 <= K < N, got {args.shard!r}")

    torch.set_num_threads(args.threads)
    x, y = load_batch(args.data, args.batch)
    space = NB201Space()
    column = COLUMNS[args.mode]
    todo = sample_cells(args.cells, args.sample_seed)
    done = done_indices(args.out)
    remaining = [i for k, i in enumerate(todo) if i not in done and k % shards == shard]
    print(f"{args.out}: {len(done & set(todo))} of {len(todo)} cells done, {len(remaining)} to go in shard {args.shard} "
          f"(mode {args.mode}, column {column})", flush=True)
    new_file = not os.path.exists(args.out) or os.path.getsize(args.out) == 0
    start = time.perf_counter()
    with open(args.out, "a", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if new_file:
            writer.writerow(["index", "arch_str", "seed", column])
            f.flush()
        for k, index in enumerate(remaining, start=1):
            seed = index
            value = score_cell(space, index, seed, x, y, args.mode)
            writer.writerow([index, space.arch(index), seed, repr(float(value))])
            f.flush()
            os.fsync(f.fileno())
            elapsed = time.perf_counter() - start
            eta = elapsed / k * (len(remaining) - k)
            shown = value if math.isfinite(value) else str(value)
            print(f"[{k}/{len(remaining)}] index {index} {column}={shown} "
                  f"({elapsed:.0f}s elapsed, ETA {eta:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
