"""Every registered proxy on the cells and batch of docs/benchmarks/nb201_cifar10.csv.

Same recipe as ``bench/nb201_table.py`` (its docstring): the first 128 images of the shared CIFAR-10
sample, CIFAR-10 normalisation, per row ``torch.manual_seed(seed)`` then
``NB201Space().build(index, num_classes=10, C=16, N=5)`` in train mode; each proxy scores that one
network (proxies leave it unchanged). The EPE column is the committed reference one; this adds one
column per other proxy. Resumable (rows appended and flushed; done indices skipped)::

    python bench/nb201_proxies.py --cells docs/benchmarks/nb201_cifar10.csv \
        --out docs/benchmarks/nb201_cifar10_proxies.csv --data ../shared/data/cifar10/cifar10_sample.npz
"""
from __future__ import annotations

import argparse
import time

import torch
from _common import CIFAR10_SAMPLE, CsvAppender, load_batch, read_rows
from nb201_table import done_indices

from lightning_epe.scores import available, get_score, score_info
from lightning_epe.spaces import NB201Space

PROXIES = [name for name in available() if name != "epe" and not score_info(name).relative]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="docs/benchmarks/nb201_cifar10.csv", help="CSV with index, arch_str, seed")
    p.add_argument("--out", default="docs/benchmarks/nb201_cifar10_proxies.csv")
    p.add_argument("--data", default=CIFAR10_SAMPLE)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="only the first N cells of --cells")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reverse", action="store_true",
                   help="from the last cell backwards: a second process can extend the same file from the other end")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = read_rows(args.cells)[: args.limit]
    if args.reverse:
        rows.reverse()
    x, y = load_batch(args.data, args.batch)
    space, done = NB201Space(), done_indices(args.out)
    with CsvAppender(args.out, ["index", "arch_str", "seed", *PROXIES]) as out:
        for n, row in enumerate(rows, start=1):
            index, seed = int(row["index"]), int(row["seed"])
            if index in done:
                continue
            start = time.perf_counter()
            torch.manual_seed(seed)
            model = space.build(index, num_classes=10, C=16, N=5).train()
            values = [get_score(name)(model, x, y) for name in PROXIES]
            out.append([index, row["arch_str"], seed, *map(repr, values)])
            print(f"{n}/{len(rows)} index {index}: {time.perf_counter() - start:.2f}s", flush=True)


if __name__ == "__main__":
    main()
