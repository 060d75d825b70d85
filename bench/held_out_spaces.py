"""The defaults on spaces they were not chosen on: NAS-Bench-101 and the DARTS space (NAS-Bench-301), CIFAR-10.

Architectures: the 250 rows of ``../shared/data/nb101/nb101_cifar10_naslib.csv`` and of
``../shared/data/nb301/nb301_cifar10_naslib.csv`` (NASLib's zero-cost benchmark files: ground truth
``val_accuracy``, NASLib's ``params_m``/``flops_m`` and its own proxy values). Row ``r`` (0-based) has
``seed = r``: ``torch.manual_seed(seed)`` then ``NB101Space().build(cell)`` (stem 128, 3 stacks of 3 cells) or
``DARTSSpace().build(genotype)`` (32 channels, 8 cells: NASLib's size, which its ``params_m`` pins) in train
mode, 10 classes. Batch: the first 128 images of the shared CIFAR-10 sample (``x``, ``y``). Each proxy is fed
as its official code feeds it, exactly as ``bench/nb201_sota.py``'s ``score_cell``: the classic proxies and
EPE on ``x, y`` in one fused pass, MeCo on ``x[:1]``, SWAP on ``x[:16]``, AZ-NAS's components after
``torch.manual_seed(seed)`` with their official re-initialisation and a noise input of 64. One thread::

    OMP_NUM_THREADS=1 nice -n 10 python bench/held_out_spaces.py score --space darts   # resumable
    OMP_NUM_THREADS=1 nice -n 10 python bench/held_out_spaces.py score --space nb101
    python bench/held_out_spaces.py report

Rule: nothing is chosen on these spaces; the default ensemble (``DEFAULT_MEMBERS``) is reported as it is.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import CIFAR10_SAMPLE, NB201_TRUTH, CsvAppender, kendall_tau_b, load_batch, read_rows

from lightning_epe.benchmark import precision_at_top
from lightning_epe.scores import DEFAULT_MEMBERS
from lightning_epe.scores.ranking import TAU_MEMBERS, rank_ensemble
from lightning_epe.spaces import DARTSSpace, NB101Space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nb201_sota import sample_cells, score_cell  # noqa: E402  (the same feeding as the NB201 tables)

OUT = Path("docs/benchmarks")
DATA = {"nb101": "../shared/data/nb101/nb101_cifar10_naslib.csv",
        "darts": "../shared/data/nb301/nb301_cifar10_naslib.csv"}
SPACES = {"nb101": NB101Space, "darts": DARTSSpace}
#: Scored columns: the default ensemble's members, then the cheap ones that come with them, then SWAP.
NAMES = ("epe", "synflow", "meco", "az_expressivity", "az_trainability", "params", "flops", "jacob_cov", "naswot",
         "swap")  # the committed CSVs' header; covers DEFAULT_MEMBERS
NASLIB = ("epe_nas", "fisher", "grad_norm", "grasp", "jacov", "l2_norm", "plain", "snip", "synflow")
TARGET = "val_accuracy"


def output_path(space: str) -> Path:
    return OUT / f"held_out_{space}_cifar10.csv"


def candidate_of(space: str, row: dict) -> str:
    return f"{row['matrix']}|{row['ops']}" if space == "nb101" else f"{row['normal']}|{row['reduce']}"


def score(args) -> int:
    torch.set_num_threads(args.threads)
    rows = read_rows(args.truth or DATA[args.space])[: args.limit]
    out = Path(args.out or output_path(args.space))
    done = {int(r["row"]) for r in read_rows(out)}
    x, y = load_batch(args.data, 128)
    space = SPACES[args.space]()
    with CsvAppender(out, ["row", "candidate", "seed", *NAMES, "seconds"]) as csv_out:
        for n, row in enumerate(rows):
            if n in done:
                continue
            candidate = space.parse(candidate_of(args.space, row))
            start = time.perf_counter()
            torch.manual_seed(n)
            net = space.build(candidate, num_classes=10).train()
            values = score_cell(net, x, y, n, NAMES)
            seconds = time.perf_counter() - start
            csv_out.append([n, candidate, n, *(repr(float(values[k])) for k in NAMES), f"{seconds:.3f}"])
            print(f"{args.space} row {n}/{len(rows)}: {seconds:.2f}s", flush=True)
    return 0


# ------------------------------------------------------------------------------------------ report
#: Published training-free figures for these spaces that the search tool could source (value, protocol).
_NBSZ = ("NAS-Bench-Suite-Zero (Krishnakumar et al., NeurIPS 2022 Datasets and Benchmarks, arXiv 2210.03230), "
         "Fig. 2/6 (Spearman) and Fig. 8 (precision at the top, K = 100 panel; its values suggest K is a percentage): "
         "1,000 architectures drawn at random, validation accuracy, batch 64")
_LSWAG = ("L-SWAG (Casarin et al., CVPR 2025, arXiv 2505.07300), Table 1: 1,000 networks, several runs, batch 64, "
          "validation accuracy, every proxy re-run by its authors with NASLib's code. LIBRA chooses its three proxies "
          "with the same benchmark's accuracies, so it is not a held-out figure")
PUBLISHED = {
    "darts": [("SWAP", "Spearman 0.93", "SWAP-Score, Peng et al. arXiv 2605.07378 (SWAP_Universal): CIFAR-10 "
               "validation accuracy of 1,000 DARTS-space CNNs of the authors' own set (200-epoch training), "
               "not NB301's"),
              ("AZ-NAS (re-run by L-SWAG) / LIBRA", "Spearman 0.70 / 0.74 on NB301", _LSWAG),
              ("MeCo (NeurIPS 2023)", "Spearman 0.70 (MeCo_opt 0.71)", "as a third-party note quotes its Table 2; the "
               "paper itself could not be read here"),
              ("nwot, best of NAS-Bench-Suite-Zero's 13 proxies", "Spearman 0.47 (params 0.46, synflow 0.18, epe_nas "
               "0.00); precision at the top 0.286", _NBSZ),
              ("Kendall tau", "none found for this space", "every source above reports Spearman only")],
    "nb101": [("ZiCo (ICLR 2023)", "Kendall tau 0.46, Spearman 0.63 (Zen-score the same; #Params 0.31 / 0.43)",
               "Li et al., arXiv 2301.11300, Fig. 3 and Sec. 4.3: NB101 test accuracy; how many architectures is "
               "not stated in the parts read"),
              ("NASWOT (ICML 2021)", "Kendall tau 0.285", "Mellor et al., Fig. 3(b): about 1,000 random NB101 "
               "networks, validation accuracy"),
              ("AZ-NAS (re-run by L-SWAG) / LIBRA", "Spearman 0.54 / 0.77", _LSWAG),
              ("MeCo (NeurIPS 2023)", "Spearman 0.44", "as a third-party note quotes its supplementary Table 4; the "
               "paper itself could not be read here"),
              ("zen, best of NAS-Bench-Suite-Zero's 13 proxies", "Spearman 0.59 (l2_norm 0.50, params 0.37, nwot "
               "0.31, synflow 0.31, epe_nas 0.00); precision at the top 0.292 (l2_norm)", _NBSZ)],
}
#: The best published figure of a single, benchmark-agnostic training-free proxy on each space (metric: value, who).
PUBLISHED_BEST = {"darts": {"rho": (0.70, "AZ-NAS as re-run by L-SWAG, on NB301")},
                  "nb101": {"tau": (0.46, "ZiCo"), "rho": (0.63, "ZiCo")}}


def _table(columns: dict, pick=None, members=DEFAULT_MEMBERS) -> list[dict]:
    pick = np.arange(len(columns[NAMES[0]])) if pick is None else pick
    return [{m: float(columns[m][i]) for m in members} for i in pick]


def ensemble_of(columns: dict, members) -> np.ndarray:
    """The equal-weight rank ensemble of ``members`` over every row."""
    return np.array(rank_ensemble(_table(columns, members=members), members=members))


def default_ensemble(columns: dict, pick=None) -> np.ndarray:
    """The library's default ensemble (its members, weights and re-ranking of the top) over the rows ``pick``."""
    return np.array(rank_ensemble(_table(columns, pick)))


def space_table(space: str) -> tuple[list[dict], dict]:
    """One row per column (ours, the ensemble, NASLib's, params/flops of the file) over the scored rows."""
    from scipy.stats import spearmanr

    truth_rows = read_rows(DATA[space])
    scored = read_rows(output_path(space))
    if not scored:
        return [], {"n": 0, "of": len(truth_rows)}
    index = [int(r["row"]) for r in scored]
    truth = np.array([float(truth_rows[i][TARGET]) for i in index])
    columns = {name: np.array([float(r[name]) for r in scored]) for name in NAMES}
    columns["ensemble (default)"] = default_ensemble(columns)
    columns["ensemble (tau members)"] = ensemble_of(columns, TAU_MEMBERS)
    for name in ("params_m", "flops_m", *NASLIB):
        columns[f"NASLib {name}"] = np.array([float(truth_rows[i][name]) for i in index])
    table = []
    for name, values in columns.items():
        clean = np.where(np.isnan(values), -np.inf, values)
        table.append({"column": name, "tau": kendall_tau_b(values, truth),
                      "rho": float(spearmanr(clean, truth).statistic),
                      "p10": precision_at_top(values, truth, fraction=0.1),
                      "n_nan": int(np.isnan(values).sum()), "n_inf": int(np.isinf(values).sum())})
    seconds = np.array([float(r["seconds"]) for r in scored])
    return table, {"n": len(scored), "of": len(truth_rows), "seconds_median": float(np.median(seconds)),
                   "seconds_max": float(seconds.max()), "columns": columns, "truth": truth}


def bootstrap_gap(columns: dict, truth: np.ndarray, other: str, runs: int = 1000, seed: int = 0) -> tuple:
    """Kendall tau of the default ensemble minus ``other``'s, and its 5th and 95th percentiles over ``runs``
    resamples of the architectures with replacement (the ensemble re-aggregated on each resample)."""
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(runs):
        pick = rng.integers(0, len(truth), len(truth))
        ensemble = default_ensemble(columns, pick)
        gaps.append(kendall_tau_b(ensemble, truth[pick]) - kendall_tau_b(columns[other][pick], truth[pick]))
    full = kendall_tau_b(columns["ensemble (default)"], truth) - kendall_tau_b(columns[other], truth)
    low, high = np.nanpercentile(gaps, [5, 95])
    return full, float(low), float(high)


def plot(tables: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 6), squeeze=False)
    for ax, (space, (table, info)) in zip(axes[0], tables.items()):
        rows = sorted(table, key=lambda r: -np.nan_to_num(r["tau"], nan=-1))
        colours = ["tab:red" if r["column"].startswith("ensemble") else
                   "tab:gray" if r["column"].startswith("NASLib") else "tab:blue" for r in rows]
        ax.barh([r["column"] for r in rows], [np.nan_to_num(r["tau"]) for r in rows], color=colours)
        ax.invert_yaxis()
        ax.set_title(f"{space}: Kendall tau vs val_accuracy ({info['n']}/{info['of']} scored)")
        ax.set_xlabel("Kendall tau (blue: ours, red: default ensemble, gray: NASLib's columns)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


#: What one architecture costs the scoring process itself (measured with `time` on --limit runs, startup included).
CPU_COST = {"darts": "CPU time of the process: 31.9 s of user time for the first two rows (`time ... score --space "
                     "darts --limit 2`), about 15 CPU-s an architecture.",
            "nb101": "CPU time of the process: 34 CPU-minutes for the first 120 rows (read off the process while "
                     "the whole-space NB201 run shared the two cores), about 17 CPU-s an architecture."}
#: What shared the machine while each space was scored (the wall seconds depend on it).
LOAD = {"darts": "a load of about 12", "nb101": "the two processes of the whole-space NB201 run (a load of about 3)"}
NB201_CORRELATIONS = OUT / "nb201_cifar10_proxies_sample1_correlations.csv"


def cross_space(tables: dict) -> list[str]:
    """Kendall tau of each of our columns on NB201 (sample 1 of bench/nb201_sota.py, CIFAR-10 valid) and on the
    held-out spaces, with the worst case over the spaces: a robustness view, as a proposal only."""
    nb201 = {r["score"]: float(r["cifar10_valid_acc tau"]) for r in read_rows(NB201_CORRELATIONS)}
    nb201["ensemble (default)"] = nb201.get("default", math.nan)
    spaces = [s for s, (table, _) in tables.items() if table]
    taus = {s: {r["column"]: r["tau"] for r in tables[s][0]} for s in spaces}
    names = ["ensemble (default)", *NAMES]
    rows = []
    for name in names:
        values = [nb201.get(name, math.nan), *(taus[s].get(name, math.nan) for s in spaces)]
        rows.append((name, values, min(values)))
    rows.sort(key=lambda r: -np.nan_to_num(r[2], nan=-2))
    lines = ["## Across the three spaces (Kendall tau vs CIFAR-10 validation accuracy)", "",
             f"NB201: the 933 cells of sample 1 (`{NB201_CORRELATIONS.name}`, ensemble = the default members). "
             "Held-out spaces: the rows scored so far. Sorted by the worst case over the spaces, the robustness "
             "criterion proposed here; nothing is changed because of it (the rule of issue 21).", "",
             "| column | NB201 | " + " | ".join(spaces) + " | worst |", "|---|---|" + "---|" * len(spaces) + "---|"]
    for name, values, worst in rows:
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {worst:.3f} |")
    best = rows[0]
    ensemble = next(r for r in rows if r[0] == "ensemble (default)")
    lines += ["", f"Highest worst case: {best[0]} ({best[2]:.3f}); the default ensemble's worst case: "
              f"{ensemble[2]:.3f}.", ""]
    return lines


#: Rank ensembles proposed for robustness across spaces (equal-weight log-rank sums), reasoned from the tables
#: above (EPE and jacob_cov change sign on NB101, az_trainability is weak on every space) and shipped as nothing.
PROPOSALS = {"proposal: synflow + meco + az_expressivity + params": ("synflow", "meco", "az_expressivity", "params"),
             "proposal: meco + az_expressivity + params": ("meco", "az_expressivity", "params")}
NB201_SPACE = OUT / "nb201_space.csv"


def nb201_columns() -> tuple[dict, np.ndarray] | None:
    """The whole-space NB201 table's cells outside sample 0 (where the defaults were chosen), and their CIFAR-10
    valid accuracy; None while the table is absent."""
    rows = read_rows(NB201_SPACE)
    if not rows:
        return None
    chosen_on = set(sample_cells(0))
    rows = [r for r in rows if int(r["index"]) not in chosen_on]
    truth = {int(r["index"]): float(r["cifar10_valid_acc"]) for r in read_rows(NB201_TRUTH)}
    names = sorted({m for members in PROPOSALS.values() for m in members} | set(DEFAULT_MEMBERS))
    columns = {m: np.array([float(r[m]) for r in rows]) for m in names}
    return columns, np.array([truth[int(r["index"])] for r in rows])


def proposals(tables: dict) -> list[str]:
    """The proposals beside the default, the previous default and params, on every space (NB201: the whole-space
    table's held-out cells): Kendall tau and precision at the top 10 %, and the worst case of each."""
    spaces = {s: (info["columns"], info["truth"]) for s, (table, info) in tables.items() if table}
    nb201 = nb201_columns()
    if nb201:
        spaces = {"NB201": nb201, **spaces}
    rules = {"ensemble (default)": default_ensemble,
             "ensemble (tau members)": lambda c: ensemble_of(c, TAU_MEMBERS),
             **{name: (lambda c, m=members: ensemble_of(c, m)) for name, members in PROPOSALS.items()},
             "params": lambda c: c["params"]}
    lines = ["## A proposal for robustness across spaces (nothing shipped)", "",
             "Equal-weight log-rank sums of members that keep their sign on all three spaces, beside the default. "
             "Kendall tau / precision at the top 10 % with CIFAR-10 validation accuracy; NB201: "
             f"{len(nb201[1]) if nb201 else 0} cells of `{NB201_SPACE.name}` outside sample 0.", "",
             "| score | " + " | ".join(spaces) + " | worst tau |", "|---|" + "---|" * len(spaces) + "---|"]
    worst = {}
    for name, rule in rules.items():
        cells = []
        for columns, truth in spaces.values():
            values = rule(columns)
            cells.append((kendall_tau_b(values, truth), precision_at_top(values, truth, fraction=0.1)))
        worst[name] = min(t for t, _ in cells)
        lines.append(f"| {name} | " + " | ".join(f"{t:.3f} / {p:.2f}" for t, p in cells) + f" | {worst[name]:.3f} |")
    best = max(PROPOSALS, key=worst.get)
    members = list(PROPOSALS[best])
    return lines + ["", f"The most robust here, {best.split(': ')[1]}, has a worst case of {worst[best]:.3f} "
                    f"against the default's {worst['ensemble (default)']:.3f}. Nothing changes because of it (the "
                    "rule of issue 21: no member or weight is chosen on these spaces); a user whose space is not "
                    f"NB201-like can ask for it: `score_options={{\"members\": {members}}}`.", ""]


def report(args) -> int:
    tables = {space: space_table(space) for space in ("darts", "nb101")}
    lines = ["# The defaults on held-out spaces: NAS-Bench-101 and DARTS (NAS-Bench-301), CIFAR-10", "",
             "Generated by `python bench/held_out_spaces.py report` from `held_out_darts_cifar10.csv` and "
             "`held_out_nb101_cifar10.csv` (how they are scored: the module docstring of "
             "`bench/held_out_spaces.py`). **Nothing was chosen on these spaces**: the default ensemble "
             f"(`rank_ensemble`'s default: {', '.join(DEFAULT_MEMBERS)}, weighted, top re-ranked) and every "
             "protocol are "
             "NAS-Bench-201's. `ensemble (tau members)`: the previous default (the five tau members, equal "
             "weights).", "",
             "Coverage: " + ", ".join(f"{s} {info['n']}/{info['of']}" for s, (_, info) in tables.items())
             + ". Ground truth: `val_accuracy` of the shared files. Precision at the top 10 %: the share of the "
             "top 10 % by score that is in the top 10 % by accuracy (chance: 0.10; ties as their expectation: "
             "`lightning_epe.benchmark.precision_at_top`). NaN/-inf scores rank last. "
             "`NASLib ...` are the files' own columns on the same architectures (NAS-Bench-Suite-Zero's values; "
             "their inputs and seeds are not known here).", ""]
    for space, (table, info) in tables.items():
        lines += [f"## {space} ({info['n']} of {info['of']} architectures scored)", ""]
        if not table:
            lines += [f"Not scored yet: `OMP_NUM_THREADS=1 nice -n 10 python bench/held_out_spaces.py score "
                      f"--space {space}` (resumable).", ""]
            continue
        lines += [f"Wall seconds per architecture (all columns, one thread, niced, on a 2-core machine shared with "
                  f"{LOAD[space]}): median {info['seconds_median']:.1f}, max {info['seconds_max']:.1f}. "
                  f"{CPU_COST[space]}", "",
                  "| column | Kendall tau | Spearman rho | precision @ top 10 % | NaN | ±inf |",
                  "|---|---|---|---|---|---|"]
        for r in sorted(table, key=lambda r: -np.nan_to_num(r["tau"], nan=-2)):
            lines.append(f"| {r['column']} | {r['tau']:.3f} | {r['rho']:.3f} | {r['p10']:.2f} | {r['n_nan']} | "
                         f"{r['n_inf']} |")
        ours = {r["column"]: r for r in table}
        ens = ours["ensemble (default)"]
        singles = [r for r in table if r["column"] in NAMES]
        best_tau = max(singles, key=lambda r: np.nan_to_num(r["tau"], nan=-2))
        best_p = max(singles, key=lambda r: r["p10"])
        lines += ["", f"Default ensemble: tau {ens['tau']:.3f}; best single column of ours by tau: "
                  f"{best_tau['column']} {best_tau['tau']:.3f}; by precision at the top 10 %: {best_p['column']} "
                  f"{best_p['p10']:.2f} (ensemble {ens['p10']:.2f}); params {ours['params']['tau']:.3f} / "
                  f"{ours['params']['p10']:.2f}.", ""]
        above_tau = all(ens["tau"] > r["tau"] for r in singles)
        above_p = all(ens["p10"] > r["p10"] for r in singles)
        lines += [f"Goal of issue 21, the default ensemble above every single column of ours (params included): in "
                  f"Kendall tau {'met' if above_tau else 'not met'}, in precision at the top 10 % "
                  f"{'met' if above_p else 'not met'} (strictly above; on {info['n']} architectures).", ""]
        for other in dict.fromkeys((best_tau["column"], "params")):
            if other in info["columns"]:
                gap, low, high = bootstrap_gap(info["columns"], info["truth"], other)
                lines.append(f"- ensemble tau minus {other}'s: {gap:+.3f} (5-95 % over 1,000 bootstrap resamples of "
                             f"the architectures: {low:+.3f} .. {high:+.3f})")
        lines.append("")
        pairs = [(a, b) for a, b in (("params", "params_m"), ("flops", "flops_m"), ("synflow", "synflow"),
                                     ("epe", "epe_nas"), ("jacob_cov", "jacov"))]
        agreement = ", ".join(f"{a} vs {b} {kendall_tau_b(info['columns'][a], info['columns'][f'NASLib {b}']):.3f}"
                              for a, b in pairs)
        lines += [f"Our columns against NASLib's on the same architectures (Kendall tau between the two): {agreement}. "
                  "synflow is data-independent (NASLib's value is the log of ours, up to the initialisation); EPE and "
                  "jacob_cov depend on the batch and the seed, which NASLib's files do not give.", ""]
        best = PUBLISHED_BEST[space]
        versus = "; ".join(f"{'Kendall tau' if m == 'tau' else 'Spearman rho'} {ens[m]:.3f} against {value:.2f} "
                           f"({who}): {'met' if ens[m] >= value else f'not met, by {value - ens[m]:.3f}'}"
                           for m, (value, who) in best.items())
        lines += [f"Goal of issue 21, the default ensemble at or above the best published figure of a single training-"
                  f"free proxy on this space: {versus}. Protocols differ (architectures, accuracy, batch), so this "
                  "is an indication, not a like-for-like comparison.", ""]
        published = PUBLISHED[space]
        lines += ["Published training-free figures for this space (found with the search tool):", ""]
        if published:
            lines += [f"- {name}: {value}. Protocol: {protocol}." for name, value, protocol in published]
        else:
            lines += ["- none whose table values the search tool returned (the papers of NAS-Bench-Suite-Zero, "
                      "MeCo, SWAP, ZiCo report this space, but only their abstracts came back); the `NASLib` rows "
                      "above are the peer on the same architectures."]
        lines.append("")
    lines += cross_space(tables)
    lines += proposals(tables)
    plot(tables, OUT / "held_out_spaces.png")
    lines += ["![Kendall tau per column](held_out_spaces.png)", "",
              "Resume the scoring (each command skips the rows already in its CSV):", "", "```bash",
              "OMP_NUM_THREADS=1 nice -n 10 python bench/held_out_spaces.py score --space darts",
              "OMP_NUM_THREADS=1 nice -n 10 python bench/held_out_spaces.py score --space nb101",
              "python bench/held_out_spaces.py report", "```", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))
    return 0

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("score", help="score the architectures of a space (resumable)")
    s.add_argument("--space", choices=sorted(SPACES), required=True)
    s.add_argument("--limit", type=int, default=None, help="only the first LIMIT rows")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--data", default=CIFAR10_SAMPLE)
    s.add_argument("--truth", default=None, help="the architectures' CSV (default: the shared file)")
    s.add_argument("--out", default=None,
                   help="the CSV to extend (default: docs/benchmarks/held_out_<space>_cifar10.csv)")
    r = commands.add_parser("report", help="write the report over what is scored")
    r.add_argument("--out", default=str(OUT / "held_out_spaces.md"))
    args = parser.parse_args(argv)
    return score(args) if args.command == "score" else report(args)


if __name__ == "__main__":
    raise SystemExit(main())
