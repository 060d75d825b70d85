"""Choose the rank ensemble's default members on NAS-Bench-201 / CIFAR-10, honestly.

Joins the committed EPE column (docs/benchmarks/nb201_cifar10.csv) with the other proxies
(docs/benchmarks/nb201_cifar10_proxies.csv, from bench/nb201_proxies.py) and the ground truth.
Every subset of proxies is scored by Kendall tau-b of its rank ensemble with ``--target`` on a
*selection* half of the cells (even rows); the chosen subset is then reported on the *held-out*
half (odd rows) and on all cells beside every single proxy, so the figure is not selected on the
cells it is reported on. Writes ``--out`` (CSV, one row per subset) and prints a Markdown table::

    python bench/ensemble_select.py --target cifar10_valid_acc
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
from _common import NB201_TRUTH, read_rows, replace_csv

from lightning_epe.benchmark import rank_correlations
from lightning_epe.scores import rank_ensemble


def load(epe_csv: str, proxies_csv: str, truth_csv: str, target: str):
    epe = {int(r["index"]): float(r["epe"]) for r in read_rows(epe_csv)}
    unique = {int(r["index"]): r for r in read_rows(proxies_csv)}  # two writers may overlap
    rows = [unique[i] for i in epe if i in unique]  # in the sample's order
    truth = {int(r["index"]): float(r[target]) for r in read_rows(truth_csv)}
    names = ["epe"] + [c for c in rows[0] if c not in ("index", "arch_str", "seed")]
    table = [{"epe": epe[int(r["index"])], **{n: float(r[n]) for n in names[1:]}} for r in rows]
    return names, table, np.array([truth[int(r["index"])] for r in rows])


def tau(table, members, truth) -> float:
    return rank_correlations(np.array(rank_ensemble(table, members)), truth)["tau"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epe", default="docs/benchmarks/nb201_cifar10.csv")
    p.add_argument("--proxies", default="docs/benchmarks/nb201_cifar10_proxies.csv")
    p.add_argument("--truth", default=NB201_TRUTH)
    p.add_argument("--target", default="cifar10_valid_acc")
    p.add_argument("--out", default="docs/benchmarks/nb201_cifar10_ensembles.csv")
    args = p.parse_args()
    names, table, truth = load(args.epe, args.proxies, args.truth, args.target)
    select, held = slice(0, None, 2), slice(1, None, 2)
    results = []
    for k in range(1, len(names) + 1):
        for members in itertools.combinations(names, k):
            results.append({"members": "+".join(members), "k": k,
                            "tau_select": tau(table[select], members, truth[select]),
                            "tau_heldout": tau(table[held], members, truth[held]),
                            "tau_all": tau(table, members, truth)})
    results.sort(key=lambda r: -r["tau_select"])
    replace_csv(args.out, list(results[0]),
                ({**r, **{k: f"{v:.4f}" for k, v in r.items() if k.startswith("tau")}} for r in results))
    best = results[0]
    singles = sorted((r for r in results if r["k"] == 1), key=lambda r: -r["tau_all"])
    print(f"{len(table)} cells; target {args.target}; chosen on the even rows: {best['members']}\n")
    print("| score | tau-b selection half | tau-b held-out half | tau-b all cells |\n|---|---|---|---|")
    for r in [best, *singles]:
        name = f"ensemble ({r['members']})" if r is best else r["members"]
        print(f"| {name} | {r['tau_select']:.3f} | {r['tau_heldout']:.3f} | {r['tau_all']:.3f} |")
    print(f"\nall {len(results)} subsets: {args.out}")


if __name__ == "__main__":
    main()
