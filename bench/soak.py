"""Soak test: score many candidates in one process and watch resident memory (RSS) for growth.

One ``ArchitectureSearch`` (random NB201 cells, EPE score, CPU, a results directory as in real use)
scores ``--candidates`` cells on one fixed batch of random 32x32 images. RSS (``VmRSS`` from
``/proc/self/status``) is read after every ``--every`` candidates; the figure is the growth from
the end of the warm-up (``--warmup`` candidates: allocator pools, oneDNN primitive caches, imports)
to the end. The search keeps every record in memory (a few hundred bytes each), which is part of
the figure. The criterion (issue 7) is growth < 5%.

    python bench/soak.py                                   # 2,000 candidates, C=4, N=1, batch 64
    python bench/soak.py --candidates 500 --C 8 --N 1 --threads 1 --json soak.json

Linux only (reads /proc). Timings are not the point: a loaded machine only makes it slower.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import torch


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


class RandomImages:
    """A map-style datamodule of random normalised 32x32 RGB images, 10 classes."""

    num_classes, in_channels = 10, 3

    def __init__(self, n: int, batch_size: int, size: int = 32):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.arange(n) % 10
        self.batch_size = batch_size

    def prepare_data(self):
        pass

    def setup(self, stage=None):
        pass

    def train_dataloader(self):
        from torch.utils.data import DataLoader, TensorDataset

        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=2000, help="candidates to score")
    parser.add_argument("--warmup", type=int, default=200, help="candidates before the baseline RSS is read")
    parser.add_argument("--every", type=int, default=100, help="read RSS every this many candidates")
    parser.add_argument("--C", type=int, default=4, help="NB201 channels of the first stage")
    parser.add_argument("--N", type=int, default=1, help="NB201 cells per stage")
    parser.add_argument("--batch-size", type=int, default=64, help="scoring batch size (32x32 images)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--results-dir", default=None, help="results directory (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the trace and figures to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from lightning_epe.search import ArchitectureSearch

    results_dir = args.results_dir or tempfile.mkdtemp(prefix="soak-")
    search = ArchitectureSearch(budget=args.candidates, seed=0, build_options={"C": args.C, "N": args.N},
                                batch_size=args.batch_size, accelerator="cpu", progress=False,
                                results_dir=results_dir)
    trace: list[tuple[int, float, float]] = []  # (candidates scored, RSS MiB, seconds)
    start = time.perf_counter()
    score_candidate = search.score_candidate

    def measured(*a, **k):
        record = score_candidate(*a, **k)
        done = record["trial"] + 1
        if done == args.warmup or done % args.every == 0 or done == args.candidates:
            trace.append((done, rss_mib(), time.perf_counter() - start))
            print(f"{done:6d} candidates  RSS {trace[-1][1]:8.1f} MiB  {trace[-1][2]:7.1f} s", flush=True)
        return record

    search.score_candidate = measured
    print(f"start: RSS {rss_mib():.1f} MiB; torch {torch.__version__}, {torch.get_num_threads()} thread(s); "
          f"NB201 C={args.C} N={args.N}, batch {args.batch_size}x3x32x32; results in {results_dir}", flush=True)
    result = search.run(RandomImages(max(512, args.batch_size), args.batch_size))
    after_warmup = next(rss for done, rss, _ in trace if done == args.warmup)
    end = trace[-1][1]
    after = [rss for done, rss, _ in trace if done >= args.warmup]
    growth = 100 * (end - after_warmup) / after_warmup
    summary = {
        "candidates": args.candidates, "warmup": args.warmup, "C": args.C, "N": args.N,
        "batch_size": args.batch_size, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "rss_after_warmup_mib": round(after_warmup, 1), "rss_end_mib": round(end, 1),
        "rss_max_after_warmup_mib": round(max(after), 1), "growth_percent": round(growth, 2),
        "seconds": round(time.perf_counter() - start, 1), "scored": sum(r["score"] is not None for r in result.records),
        "failed": len(result.failed), "trace": trace,
    }
    print(f"RSS after {args.warmup} candidates: {after_warmup:.1f} MiB; after {args.candidates}: {end:.1f} MiB "
          f"(max {max(after):.1f}); growth {growth:+.2f}% ({'PASS' if growth < 5 else 'FAIL'}: < 5%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    main()
