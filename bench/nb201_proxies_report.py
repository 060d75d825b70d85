"""Tau/rho of every proxy and of the default rank ensemble on the cells of nb201_cifar10_proxies.csv.

Writes ``nb201_cifar10_proxies_scored.csv`` (the proxies, the committed ``epe`` and ``ensemble``
with ``DEFAULT_MEMBERS``) and runs ``run_benchmark`` on it (``nb201_cifar10_proxies_*`` files)::

    python bench/nb201_proxies_report.py
"""
from __future__ import annotations

import csv

from lightning_epe.benchmark import run_benchmark
from lightning_epe.scores import DEFAULT_MEMBERS, rank_ensemble

DIR = "docs/benchmarks"
TRUTH = "../shared/data/nb201/nb201_accuracies.csv"
COLUMNS = ["cifar10_valid_acc", "cifar10_test_acc", "cifar100_test_acc", "imagenet16_120_test_acc"]

epe = {r["index"]: r["epe"] for r in csv.DictReader(open(f"{DIR}/nb201_cifar10.csv", newline=""))}
rows = list(csv.DictReader(open(f"{DIR}/nb201_cifar10_proxies.csv", newline="")))
for row in rows:
    row["epe"] = epe[row["index"]]
ensemble = rank_ensemble([{k: float(v) for k, v in row.items() if k not in ("index", "arch_str", "seed")}
                          for row in rows], DEFAULT_MEMBERS)
out = f"{DIR}/nb201_cifar10_proxies_scored.csv"
with open(out, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=[*rows[0], "ensemble"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({**row, "ensemble": repr(value)} for row, value in zip(rows, ensemble))
run_benchmark(out, TRUTH, DIR, truth_columns=COLUMNS, plots=False, prefix="nb201_cifar10_proxies_")
