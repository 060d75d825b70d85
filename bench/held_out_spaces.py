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
import sys
import time
from pathlib import Path

import torch
from _common import CIFAR10_SAMPLE, CsvAppender, load_batch, read_rows

from lightning_epe.scores import DEFAULT_MEMBERS
from lightning_epe.spaces import DARTSSpace, NB101Space

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nb201_sota import score_cell  # noqa: E402  (the same feeding as the NB201 tables)

OUT = Path("docs/benchmarks")
DATA = {"nb101": "../shared/data/nb101/nb101_cifar10_naslib.csv",
        "darts": "../shared/data/nb301/nb301_cifar10_naslib.csv"}
SPACES = {"nb101": NB101Space, "darts": DARTSSpace}
#: Scored columns: the default ensemble's members, then the cheap ones that come with them, then SWAP.
NAMES = (*DEFAULT_MEMBERS, "params", "flops", "jacob_cov", "naswot", "swap")
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
def report(args) -> int:
    raise SystemExit("report: not written yet")

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
