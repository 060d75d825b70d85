"""The CPU side of a search: what a candidate costs around a score that costs nothing.

``ArchitectureSearch`` over ``--cells`` NB201 cells (C=16, N=5; ``random_without_replacement``, seed 0)
with a score that returns 0.0 at once (``--score params`` counts parameters instead), a fixed scoring
batch and a results directory. Three rows, measured side by side in one process (the rows take
turns, ``--repeats`` times; medians):

* **plain build**: ``torch.manual_seed(seed); space.build(cell)``, then ``.to(device)``: the
  baseline of the goal (a search's CPU side <= 3 ms per candidate, >= 6x faster than this row).
* **search, before**: the search before ``NB201Builder``: every candidate built anew (the plain
  :class:`~lightning_epe.spaces.base.Builder`) and ``scores.jsonl`` fsynced after every record.
* **search**: the search as it is: :class:`~lightning_epe.spaces.nb201_builder.NB201Builder` (one
  network rewired and re-initialised per candidate, bit for bit a fresh build) and ``scores.jsonl``
  fsynced at most once a second.

Per candidate, split into **build** (the network: construction, or rewiring and drawing its
weights), **transfer** (moving it to the device: ``.to(device)``; for the search row the copy of
weights staged on the CPU, nothing on a CPU, where they are drawn in place), **store**
(``ResultsStore.append``) and **rest** (the loop, the record, the score call, the strategy)::

    python bench/pipeline.py                          # 2,000 cells x 3 repeats, CPU (~6 min on 2 cores)
    python bench/pipeline.py --cells 300 --repeats 1  # a quick look
    python bench/pipeline.py --device cuda --score epe --extrapolate   # on a GPU: + the whole space

``--extrapolate`` gives the whole NB201 space's time (15,625 cells) at the measured rate of the
``search`` row. Torch uses ``--threads`` threads (default 1); say so with the figures.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import _common
import numpy as np
import torch

from lightning_epe._seeding import seeded
from lightning_epe.data import NPZDataModule
from lightning_epe.scores import register_score, unregister_score
from lightning_epe.search import ArchitectureSearch
from lightning_epe.search import store as store_module
from lightning_epe.spaces import NB201Space, nb201_builder
from lightning_epe.spaces import base as base_module

ROOT = Path(__file__).resolve().parents[1]
SPACE = 15_625
PHASES = ("build", "transfer", "store", "rest")


def no_op(model, inputs, targets) -> float:
    """A score that costs nothing: what is left is the search's own cost."""
    return 0.0


class Clock:
    """Seconds spent in each phase, by wrapping the functions of that phase for the duration of a run."""

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES[:-1], 0.0)

    def wrap(self, owner, name: str, phase: str, stack: contextlib.ExitStack, minus: str | None = None):
        """Time ``owner.name`` into ``phase`` (less what is timed into ``minus`` inside it meanwhile)."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            inner = self.seconds[minus] if minus else 0.0
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[phase] += time.perf_counter() - start - ((self.seconds[minus] - inner) if minus else 0.0)

        setattr(owner, name, timed)
        stack.callback(setattr, owner, name, original)


def data_module(path: Path, workdir: Path) -> tuple[NPZDataModule, str]:
    if not path.exists():
        rng = np.random.default_rng(0)
        path = workdir / "noise.npz"
        np.savez(path, x=rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8), y=np.arange(256) % 10)
        source = "uniform noise images (no CIFAR-10 sample found)"
    else:
        source = f"CIFAR-10 sample {path.name}"
    return NPZDataModule(path, batch_size=128), source


def plain_builds(cells: list[int], device: torch.device, clock: Clock) -> float:
    space = NB201Space()
    network = None
    start = time.perf_counter()
    for trial, cell in enumerate(cells):
        network = None  # freed before the next is built, as the search's builders do (~15% faster)
        t0 = time.perf_counter()
        with seeded(trial, device):
            network = space.build(cell, num_classes=10, C=16, N=5)
        t1 = time.perf_counter()
        network.to(device)
        t2 = time.perf_counter()
        clock.seconds["build"] += t1 - t0
        clock.seconds["transfer"] += t2 - t1
    return time.perf_counter() - start


def search_run(row: str, args, data, device: torch.device, workdir: Path, clock: Clock) -> float:
    """One search over the cells, timed by phase; 'search, before' puts back the plain builder and an fsync per
    record."""
    with contextlib.ExitStack() as stack:
        if row == "search, before":
            stack.callback(setattr, store_module, "SYNC_SECONDS", store_module.SYNC_SECONDS)
            store_module.SYNC_SECONDS = 0.0
            stack.callback(setattr, NB201Space, "builder", NB201Space.builder)
            NB201Space.builder = base_module.CandidateSpace.builder
            clock.wrap(NB201Space, "build", "build", stack)
            clock.wrap(base_module.Builder, "build", "transfer", stack, minus="build")
        else:
            clock.wrap(nb201_builder.NB201Builder, "_copy", "transfer", stack)
            clock.wrap(nb201_builder.NB201Builder, "build", "build", stack, minus="transfer")
        clock.wrap(store_module.ResultsStore, "append", "store", stack)
        results = workdir / f"run-{time.monotonic_ns()}"
        search = ArchitectureSearch(NB201Space(), score=args.score, search_strategy="random_without_replacement",
                                    budget=args.cells, seed=0, accelerator=device.type, num_classes=10,
                                    build_options={"C": 16, "N": 5}, results_dir=str(results), progress=False)
        start = time.perf_counter()
        result = search.run(data)
        seconds = time.perf_counter() - start
        failed = [r for r in result.records if r["error"]]
        if failed:
            raise RuntimeError(f"{row}: {len(failed)} candidates failed, e.g. {failed[0]['error']}")
        shutil.rmtree(results, ignore_errors=True)
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--score", default="no_op", help="no_op (default) or a registered score, e.g. params, epe")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", nargs="+", default=["plain build", "search, before", "search"],
                   choices=["plain build", "search, before", "search"])
    p.add_argument("--extrapolate", action="store_true", help="the whole space's time at the search row's rate")
    p.add_argument("--data", type=Path, default=ROOT / _common.CIFAR10_SAMPLE)
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.score == "no_op":
        register_score("no_op")(no_op)
    workdir = Path(tempfile.mkdtemp(prefix="pipeline-"))
    try:
        data, source = data_module(args.data, workdir)
        cells = NB201Space().sample(args.cells, seed=0, replace=False)
        times: dict[str, list[dict]] = {row: [] for row in args.rows}
        for repeat in range(args.repeats):
            order = args.rows if repeat % 2 == 0 else args.rows[::-1]
            for row in order:
                clock = Clock()
                wall = (plain_builds(cells, device, clock) if row == "plain build"
                        else search_run(row, args, data, device, workdir, clock))
                per = {phase: 1e3 * clock.seconds.get(phase, 0.0) / args.cells for phase in PHASES[:-1]}
                per["rest"] = 1e3 * wall / args.cells - sum(per.values())
                per["total"] = 1e3 * wall / args.cells
                times[row].append(per)
                print(f"  repeat {repeat + 1}, {row}: {per['total']:.2f} ms per candidate", flush=True)
    finally:
        if args.score == "no_op":
            unregister_score("no_op")
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, device, source, times)
    return 0


def report(args, device: torch.device, source: str, times: dict[str, list[dict]]) -> None:
    medians = {row: {k: statistics.median(r[k] for r in runs) for k in (*PHASES, "total")}
               for row, runs in times.items()}
    gpu = torch.cuda.get_device_name(0) if device.type == "cuda" else None
    print(f"\n{args.cells} NB201 cells (C=16, N=5), score {args.score!r}, device {device}"
          f"{f' ({gpu})' if gpu else ''}, data: {source}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, torch {torch.__version__}, {args.threads} thread(s); "
          f"median of {args.repeats} run(s), ms per candidate:\n")
    print(f"| row | {' | '.join(PHASES)} | total | candidates/s |")
    print("|---|" + "---:|" * (len(PHASES) + 2))
    for row, m in medians.items():
        cells = " | ".join(f"{m[k]:.2f}" for k in PHASES)
        print(f"| {row} | {cells} | **{m['total']:.2f}** | {1e3 / m['total']:.0f} |")
    figures = {"medians_ms": medians, "cells": args.cells, "score": args.score, "device": str(device), "gpu": gpu,
               "threads": args.threads, "repeats": args.repeats, "data": source}
    if "search" in medians:
        search = medians["search"]["total"]
        print()
        for row in ("plain build", "search, before"):
            if row in medians:
                print(f"search vs {row}: {medians[row]['total'] / search:.1f}x faster per candidate")
                figures[f"speedup_vs_{row}"] = medians[row]["total"] / search
        if args.extrapolate:
            figures["whole_space_s"] = search * SPACE / 1e3
            print(f"whole NB201 space ({SPACE:,} cells) at this rate: {figures['whole_space_s']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    sys.exit(main())
