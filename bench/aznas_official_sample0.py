"""AZ-NAS components against the official scorer on the 1,000-cell sample (aznas_official_sample0.csv).

Protocol of ``../shared/data/reference/aznas_official_sample0.csv`` (see ``../shared/data/README.md``):
per row, ``torch.manual_seed(index)``, ``NB201Space().build(index, num_classes=10)`` (C=16, N=5), then
``torch.manual_seed(index)`` again right before the score call; the scorer re-initialises the
network (official Kaiming), draws its own ``randn(64, 3, 32, 32)`` input (``noise=True``), then the
trainability signs; train mode, CPU, one thread. Prints per row our values and the differences,
then the largest absolute / relative differences per component, the number of rows whose three
components agree within 1e-5 (relative, and ``|d| <= 1e-5 * max(1, |official|)``), the matching
``-inf`` values, seconds per cell next to the official ones and whether our ``flops`` ranks the
cells as the official FLOPs column::

    python bench/aznas_official_sample0.py --cells 40            # the first 40 rows
    python bench/aznas_official_sample0.py --start 500 --cells 100 --out /tmp/az_500.csv
    python bench/aznas_official_sample0.py                       # all 1,000 rows (~20 min, one core)
    python bench/aznas_official_sample0.py --ours docs/benchmarks/nb201_cifar10_proxies_sample0.csv --quiet
"""
from __future__ import annotations

import argparse
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch

from lightning_epe.scores.az_nas import COMPONENTS, az_nas_components
from lightning_epe.scores.size import flops_score
from lightning_epe.spaces import NB201Space

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reference" / "aznas_official_sample0.csv"
BATCH, RESOLUTION = 64, 32


def score_cell(space: NB201Space, index: int, mode: str = "official") -> tuple[dict, float, float]:
    """``(components, flops, cpu seconds of the score call)`` of one cell under the official protocol."""
    torch.manual_seed(index)
    net = space.build(index, num_classes=10)
    shape = torch.empty(BATCH, 3, RESOLUTION, RESOLUTION)  # noise=True: only the shape is used
    torch.manual_seed(index)
    start = time.process_time()
    values = az_nas_components(net, shape, noise=True, init="official", mode=mode)
    seconds = time.process_time() - start
    return values, flops_score(net, shape), seconds


def differences(ours: float, official: float) -> tuple[float, float, str]:
    """``(abs, rel, state)``; state is ``both -inf``, ``finite`` or ``MISMATCH``."""
    if math.isinf(official) or math.isinf(ours) or math.isnan(ours):
        return (0.0, 0.0, "both -inf") if ours == official else (math.inf, math.inf, "MISMATCH")
    diff = abs(ours - official)
    return diff, diff / abs(official) if official else (0.0 if diff == 0 else math.inf), "finite"


def discordant_pairs(a: list[float], b: list[float]) -> int:
    """Pairs ordered differently by ``a`` and ``b`` (ties must be ties in both)."""
    a, b = np.asarray(a), np.asarray(b)
    sa, sb = np.sign(a[:, None] - a[None, :]), np.sign(b[:, None] - b[None, :])
    return int((sa != sb).sum() // 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", default=str(REFERENCE), help="the official CSV")
    p.add_argument("--cells", type=int, default=None, help="compare this many rows (default: all)")
    p.add_argument("--start", type=int, default=0, help="first row (0-based) to compare")
    p.add_argument("--out", default=None, help="write our values (index, components, flops, seconds) to this CSV")
    p.add_argument("--mode", default="official", choices=["official", "clean"])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (the reference used 1)")
    p.add_argument("--quiet", action="store_true", help="only the summary")
    p.add_argument("--ours", default=None,
                   help="compare these values instead of scoring (a CSV with index, az_expressivity, az_progressivity, "
                        "az_trainability, flops: bench/nb201_sota.py's sample 0, scored with the same protocol)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with open(args.reference, newline="") as f:
        rows = list(csv.DictReader(f))
    stop = None if args.cells is None else args.start + args.cells
    rows = rows[args.start:stop]
    precomputed = None
    if args.ours:
        with open(args.ours, newline="") as f:
            precomputed = {int(r["index"]): r for r in csv.DictReader(f)}
        rows = [r for r in rows if int(r["index"]) in precomputed]
    space = NB201Space()
    worst = {c: [0.0, 0.0] for c in COMPONENTS}
    within_rel = within_mixed = both_inf = mismatches = mismatch_rows = 0
    ours_seconds, official_seconds, ours_flops, official_flops = [], [], [], []
    out = open(args.out, "w", newline="") if args.out else None
    writer = csv.writer(out, lineterminator="\n") if out else None
    if writer:
        writer.writerow(["index", *COMPONENTS, "flops", "seconds"])
    try:
        for n, row in enumerate(rows, start=args.start):
            index = int(row["index"])
            if precomputed is None:
                values, flops, seconds = score_cell(space, index, args.mode)
            else:
                mine = precomputed[index]
                values = {c: float(mine[f"az_{c}"]) for c in COMPONENTS}
                flops, seconds = float(mine.get("flops") or math.nan), math.nan
            ours_seconds.append(seconds)
            official_seconds.append(float(row["seconds"]))
            ours_flops.append(flops)
            official_flops.append(float(row["flops"]))
            ok_rel = ok_mixed = True
            parts = []
            for c in COMPONENTS:
                official = float(row[c])
                diff, rel, state = differences(values[c], official)
                both_inf += state == "both -inf"
                mismatches += state == "MISMATCH"
                if state == "finite":
                    worst[c] = [max(worst[c][0], diff), max(worst[c][1], rel)]
                ok_rel &= rel <= 1e-5
                ok_mixed &= diff <= 1e-5 * max(1.0, abs(official)) if state == "finite" else state == "both -inf"
                note = "" if state == "finite" else f", {state}"
                parts.append(f"{c[:5]} {values[c]!r} (abs {diff:.1e}, rel {rel:.1e}{note})")
            mismatch_rows += any(differences(values[c], float(row[c]))[2] == "MISMATCH" for c in COMPONENTS)
            within_rel += ok_rel
            within_mixed += ok_mixed
            if writer:
                writer.writerow([index, *(repr(values[c]) for c in COMPONENTS), repr(flops), round(seconds, 4)])
                out.flush()
            if not args.quiet:
                print(f"row {n} index {index}: " + "; ".join(parts) + f"; {seconds:.2f}s", flush=True)
    finally:
        if out:
            out.close()
    count = len(ours_seconds)
    print(f"\n{count} rows compared (rows {args.start}..{args.start + count - 1}, mode {args.mode}, "
          f"{args.threads} thread(s))")
    for c in COMPONENTS:
        print(f"  {c:14s} max abs diff {worst[c][0]:.3e}   max rel diff {worst[c][1]:.3e}")
    print(f"  rows with all three within 1e-5 relative: {within_rel}/{count}; within 1e-5 * max(1, |official|): "
          f"{within_mixed}/{count}")
    print(f"  -inf values matched: {both_inf}; mismatched values (-inf on one side only): {mismatches}, "
          f"in {mismatch_rows} row(s)")
    if count:
        print(f"  CPU seconds per cell: ours median {np.median(ours_seconds):.3f} (mean {np.mean(ours_seconds):.3f}), "
              f"official median {np.median(official_seconds):.3f} (mean {np.mean(official_seconds):.3f})")
    if count and np.isfinite(ours_flops).all():  # (--ours files without a flops column skip this)
        print(f"  flops ranks like the official FLOPs: {discordant_pairs(ours_flops, official_flops)} discordant "
              f"pairs of {count * (count - 1) // 2}")


if __name__ == "__main__":
    main()
