"""Tau/rho of every proxy and of the default rank ensemble on the cells of nb201_cifar10_proxies.csv.

Writes ``nb201_cifar10_proxies_scored.csv`` (the proxies, the committed ``epe`` and ``ensemble``
with ``TAU_MEMBERS``, the default of the time; this file has no MeCo or AZ-NAS column, so they tie) and runs
``run_benchmark`` on it (``nb201_cifar10_proxies_*`` files)::

    python bench/nb201_proxies_report.py
"""
from __future__ import annotations

import argparse

from _common import NB201_TRUTH, read_rows, replace_csv
from nb201_table import TRUTH_COLUMNS

from lightning_epe.benchmark import run_benchmark
from lightning_epe.scores import TAU_MEMBERS, rank_ensemble

DIR = "docs/benchmarks"


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    epe = {r["index"]: r["epe"] for r in read_rows(f"{DIR}/nb201_cifar10.csv")}
    rows = read_rows(f"{DIR}/nb201_cifar10_proxies.csv")
    for row in rows:
        row["epe"] = epe[row["index"]]
    ensemble = rank_ensemble([{k: float(v) for k, v in row.items() if k not in ("index", "arch_str", "seed")}
                              for row in rows], TAU_MEMBERS)
    out = f"{DIR}/nb201_cifar10_proxies_scored.csv"
    replace_csv(out, [*rows[0], "ensemble"], ({**row, "ensemble": repr(value)} for row, value in zip(rows, ensemble)))
    run_benchmark(out, NB201_TRUTH, DIR, truth_columns=TRUTH_COLUMNS, plots=False, prefix="nb201_cifar10_proxies_")


if __name__ == "__main__":
    main()
