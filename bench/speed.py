"""Speed, accuracy and memory of ``epe_score`` against the official EPE-NAS procedure, side by side.

One process, the same NB201 cells (seeded construction) and the same batch (B=128 real CIFAR-10
images from ``../shared/data/cifar10/cifar10_sample.npz``, C=16, N=5 by default):

* **official**: the official EPE-NAS procedure as published (VascoLopes/EPE-NAS @22bd341):
  ``net.zero_grad(); x.requires_grad_(True); _, y = net(x); y.backward(torch.ones_like(y));
  J = x.grad``, then ``eval_score_perclass`` in numpy on the host (reproduced below verbatim in
  spirit: vstack per row, float64 ``corrcoef``, ``log(|r| + 1e-5)``, sum of ``|E_c|``).
* **ours**: ``epe_score(net, x, y)`` (the default path: input gradient only, float64
  correlations with torch on the device, no side effects).

Measured: seconds per cell (median of ``--repeats`` interleaved runs, order alternated),
candidates per second over ``--throughput-cells`` cells (build + score, one after the other),
the accuracy of both against the same networks run in float64 (``precision="float64"``) on
``--cells`` cells (median / max relative error, Kendall tau-b of the rankings, and the issue's
rule: ours' median error <= 1.5x the reference path's and tau >= reference tau - 0.02), and
memory (peak RSS per candidate in a fresh subprocess per path; RSS and live tensors over
``--growth-cells`` candidates).

    python bench/speed.py                       # default: ~6 min on an idle 2-core CPU (21 min
                                                #   measured on a shared one, --threads 1 --tried)
    python bench/speed.py --cells 20 --repeats 3 --throughput-cells 100 --json out.json
    python bench/speed.py --tried               # also the ideas that did not make it (slower)

Timings on a shared machine are noisy: read the medians and the side-by-side ratios.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _common
import numpy as np
import torch

from lightning_epe.scores import epe_score
from lightning_epe.spaces import NB201Space

DEFAULT_DATA = (Path(__file__).resolve().parents[1] / _common.CIFAR10_SAMPLE).resolve()


# --------------------------------------------------------------------------- data and cells
def load_batch(path: Path, batch: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``batch`` rows of the CIFAR-10 sample (``_common.load_batch``), or a standard-normal batch."""
    if path.exists():
        return (*_common.load_batch(path, batch), f"CIFAR-10 sample {path.name}")
    g = torch.Generator().manual_seed(0)
    print(f"WARNING: {path} not found; using a standard-normal batch", file=sys.stderr)
    return torch.randn(batch, 3, 32, 32, generator=g), torch.arange(batch) % 10, "standard-normal batch"


def build(space: NB201Space, index: int, seed: int, C: int, N: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return space.build(index, num_classes=10, C=C, N=N)


# --------------------------------------------------------------------------- the official procedure
def eval_score_perclass(jacob: np.ndarray, labels: np.ndarray, n_classes: int = 10) -> float:
    """The official ``eval_score_perclass`` (EPE-NAS @22bd341), with its per-row vstack."""
    k = 1e-5
    per_class: dict = {}
    for i, label in enumerate(labels):
        if label in per_class:
            per_class[label] = np.vstack((per_class[label], jacob[i]))
        else:
            per_class[label] = jacob[i]
    ind_corr_matrix_score = {}
    for c in per_class.keys():
        try:
            corrs = np.corrcoef(per_class[c])
            s = np.sum(np.log(abs(corrs) + k))
            if n_classes > 100:
                s /= len(corrs)
        except Exception:  # the official bare except
            continue
        ind_corr_matrix_score[c] = s
    score = 0
    if n_classes <= 100:
        for c in ind_corr_matrix_score.keys():
            score += np.absolute(ind_corr_matrix_score[c])
    return float(score)


def official_score(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.zero_grad()
    x = x.clone()  # a fresh leaf each call (the official search draws a new batch per arch)
    x.requires_grad_(True)
    _, logits = net(x)
    logits.backward(torch.ones_like(logits))
    jacob = x.grad.detach()
    jacob = jacob.reshape(jacob.size(0), -1).cpu().numpy()
    with np.errstate(all="ignore"):
        return eval_score_perclass(jacob, y.cpu().numpy())


def ours_score(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return epe_score(net, x, y)


# --------------------------------------------------------------------------- statistics
def error_summary(scores: list[float], truth: list[float]) -> dict:
    pairs = [(s, t) for s, t in zip(scores, truth) if math.isfinite(s) and math.isfinite(t) and t != 0]
    rel = [abs(s - t) / abs(t) for s, t in pairs]
    return {"cells": len(pairs), "median_rel_error": statistics.median(rel) if rel else float("nan"),
            "max_rel_error": max(rel) if rel else float("nan"),
            "kendall_tau_b": _common.kendall_tau_b([s for s, _ in pairs], [t for _, t in pairs])}


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def timed_cpu(fn, *args) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds of this process (all its threads), value. On a shared machine the
    CPU time leaves out the time spent waiting for a core; it counts OpenMP threads spinning."""
    start, start_cpu = time.perf_counter(), time.process_time()
    value = fn(*args)
    return time.perf_counter() - start, time.process_time() - start_cpu, value


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_tensors() -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


# --------------------------------------------------------------------------- memory workers
def memory_worker(args) -> None:
    """Run in a fresh process: peak RSS of one path, then RSS and live tensors over many candidates."""
    torch.set_num_threads(args.threads or torch.get_num_threads())
    space = NB201Space()
    fn = official_score if args.memory_worker == "official" else ours_score
    x, y, _ = load_batch(Path(args.data), args.batch)
    cells = space.sample(args.memory_cells, seed=args.sample_seed, replace=False)
    gc.collect()
    base = rss_mb()
    for i, index in enumerate(cells):
        net = build(space, index, args.seed + i, args.C, args.N)
        fn(net, x, y)
        del net
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base  # KiB on Linux
    gx, gy, _ = load_batch(Path(args.data), args.batch)
    growth_cells = space.sample(args.growth_cells, seed=args.sample_seed + 1, replace=True)
    trace = []
    for i, index in enumerate(growth_cells):
        net = build(space, index, args.seed + i, args.growth_C, args.growth_N)
        fn(net, gx, gy)
        del net
        if (i + 1) % max(1, args.growth_cells // 10) == 0:
            gc.collect()
            trace.append(f"{i + 1}: {rss_mb():.1f} MiB RSS, {live_tensors()} live tensors")
    print(json.dumps({"path": args.memory_worker, "baseline_rss_mb": round(base, 1),
                      "peak_rss_over_baseline_mb": round(peak, 1), "growth": trace}))


def run_memory(args, path: str) -> dict:
    cmd = [sys.executable, __file__, "--memory-worker", path, "--data", str(args.data),
           "--batch", str(args.batch), "--C", str(args.C), "--N", str(args.N),
           "--memory-cells", str(args.memory_cells), "--growth-cells", str(args.growth_cells),
           "--growth-C", str(args.growth_C), "--growth-N", str(args.growth_N),
           "--seed", str(args.seed), "--sample-seed", str(args.sample_seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# --------------------------------------------------------------------------- ideas that did not make it
def tried(args, space, x, y, cells, truth, ref) -> dict:
    """Alternatives measured side by side with the default path (see docs/benchmarks/speed.md)."""
    import copy

    out: dict = {}
    n = min(len(cells), args.tried_cells)
    cl_scores, t_ours, t_cl, t_1, t_2 = [], [], [], [], []
    x_cl = x.contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads()
    for i, index in enumerate(cells[:n]):
        net = build(space, index, args.seed + i, args.C, args.N)
        net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
        for rep in range(args.repeats):
            pair = [("ours", net, x, t_ours), ("channels_last", net_cl, x_cl, t_cl)]
            for name, model, batch, bucket in (pair if rep % 2 == 0 else pair[::-1]):
                seconds, value = timed(epe_score, model, batch, y)
                bucket.append(seconds)
                if name == "channels_last" and rep == 0:
                    cl_scores.append(value)
            if threads > 1:  # intra-op threads: 1 vs the default, same cell, alternated
                for count, bucket in ((1, t_1), (threads, t_2)) if rep % 2 == 0 else ((threads, t_2), (1, t_1)):
                    torch.set_num_threads(count)
                    bucket.append(timed(epe_score, net, x, y)[0])
                torch.set_num_threads(threads)
    out["channels_last_float32"] = {
        "seconds_median": statistics.median(t_cl), "ours_seconds_median": statistics.median(t_ours),
        **error_summary(cl_scores, truth[:n]),
        "reference_on_same_cells": error_summary(ref[:n], truth[:n]),
    }
    if t_1:
        out["intra_op_threads"] = {"1": statistics.median(t_1), str(threads): statistics.median(t_2)}
    # torch.compile: one compilation per architecture (each cell is a new graph)
    if args.tried_compile:
        net = build(space, cells[0], args.seed, args.C, args.N)
        try:
            compiled = torch.compile(net)
            first, _ = timed(epe_score, compiled, x, y)
            second, _ = timed(epe_score, compiled, x, y)
            out["torch_compile"] = {"first_call_s": first, "second_call_s": second,
                                    "eager_s": timed(epe_score, net, x, y)[0]}
        except Exception as exc:  # pragma: no cover - depends on the toolchain
            out["torch_compile"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return out


# --------------------------------------------------------------------------- accelerator run
def device_run(args, save=lambda results: None) -> dict:
    """The accelerator benchmark (bench/gpu_check.sh): accuracy on the device, official vs ours,
    the time to build and score ``--space-cells`` cells and its extrapolation to all 15,625,
    peak memory per candidate and memory over the run."""
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    space = NB201Space()
    x_cpu, y_cpu, data_name = load_batch(Path(args.data), args.batch)
    x, y = x_cpu.to(device), y_cpu.to(device)  # the batch goes to the device once
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    print(f"{name}, torch {torch.__version__}; batch {args.batch} ({data_name}); NB201 C={args.C} N={args.N}; "
          f"cudnn.conv fp32 precision by default: "
          f"{getattr(getattr(torch.backends.cudnn, 'conv', None), 'fp32_precision', torch.backends.cudnn.allow_tf32)}",
          flush=True)
    results: dict = {"device": name, "torch": torch.__version__, "args": vars(args)}

    def on_device(index, seed, build_on_device=False):
        if build_on_device:
            with device:
                return build(space, index, seed, args.C, args.N)
        return build(space, index, seed, args.C, args.N).to(device)

    warm = on_device(0, 0)
    for _ in range(3):
        official_score(warm, x, y), ours_score(warm, x, y)
    sync()

    # 1. accuracy and official vs ours on the same cells (scores on the device)
    cells = space.sample(max(args.cells, args.device_pairs), seed=args.sample_seed, replace=False)
    truth, ref, ours, official = [], [], [], []
    t_official, t_ours = [], []
    for i, index in enumerate(cells):
        net = on_device(index, args.seed + i)
        order = [("official", official_score), ("ours", ours_score)]
        for name_, fn in (order if i % 2 == 0 else order[::-1]):
            sync()
            seconds, value = timed(fn, net, x, y)
            (t_official if name_ == "official" else t_ours).append(seconds)
            (official if name_ == "official" else ours).append(value)
        if i < args.cells:
            truth.append(epe_score(net, x, y, precision="float64"))
            ref.append(epe_score(net, x, y, reference=True))
        del net
    n = args.cells
    accuracy = {
        "official_procedure_torch_defaults": error_summary(official[:n], truth),
        "reference_path": error_summary(ref, truth),
        "ours": error_summary(ours[:n], truth),
        "ours_vs_reference_max_rel_diff": max(
            (abs(a - b) / abs(b) for a, b in zip(ours[:n], ref) if math.isfinite(b) and b), default=float("nan")),
    }
    ours_acc, ref_acc = accuracy["ours"], accuracy["reference_path"]
    accuracy["rule_median_ok"] = ours_acc["median_rel_error"] <= 1.5 * ref_acc["median_rel_error"]
    accuracy["rule_tau_ok"] = ours_acc["kendall_tau_b"] >= ref_acc["kendall_tau_b"] - 0.02
    results["accuracy"] = accuracy
    results["official_vs_ours"] = {
        "cells": len(cells), "official_s_median": statistics.median(t_official),
        "ours_s_median": statistics.median(t_ours),
        "speedup_median_of_ratios": statistics.median(o / u for o, u in zip(t_official, t_ours)),
    }
    print(json.dumps({"accuracy": accuracy, "official_vs_ours": results["official_vs_ours"]}, indent=1), flush=True)
    save(results)  # each section is kept even if a time limit stops the run later

    # 2. the space: build + score --space-cells cells, one after the other, two ways of building
    space_cells = space.sample(args.space_cells, seed=args.sample_seed + 2, replace=True)
    for mode in ("cpu-build", "device-build"):
        build_s = score_s = 0.0
        peaks, trace = [], []
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for i, index in enumerate(space_cells):
            t = time.perf_counter()
            net = on_device(index, args.seed + i, build_on_device=(mode == "device-build"))
            t2 = time.perf_counter()
            if device.type == "cuda" and i % 10 == 0:
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            ours_score(net, x, y)  # returns a float: synchronised
            t3 = time.perf_counter()
            if device.type == "cuda" and i % 10 == 0:
                peaks.append((torch.cuda.max_memory_allocated(device) - before) / 2**20)
            build_s, score_s = build_s + t2 - t, score_s + t3 - t2
            del net
            if (i + 1) % max(1, args.space_cells // 10) == 0:
                alloc = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
                trace.append(f"{i + 1}: {alloc:.1f} MiB allocated, {rss_mb():.0f} MiB RSS")
        total = time.perf_counter() - start
        results[mode] = {
            "cells": args.space_cells, "total_s": total, "build_s": build_s, "score_s": score_s,
            "ms_per_cell": 1e3 * total / args.space_cells,
            "extrapolated_15625_s": total * 15625 / args.space_cells,
            "score_only_extrapolated_15625_s": score_s * 15625 / args.space_cells,
            "peak_alloc_per_candidate_mb_median": statistics.median(peaks) if peaks else None,
            "peak_alloc_per_candidate_mb_max": max(peaks) if peaks else None,
            "allocated_mb_and_rss_mb_over_run": trace,
        }
        print(json.dumps({mode: results[mode]}, indent=1), flush=True)
        save(results)
    return results


# --------------------------------------------------------------------------- main
def ensemble_cost(args, space: NB201Space, x: torch.Tensor, y: torch.Tensor) -> dict:
    """CPU seconds of the ensemble's members alone, their sum, and the ensemble's fused pass
    (``ensemble_scores``: ``score_many`` with each member fed as its official code feeds it), beside EPE
    alone: the same cells, interleaved, median over cells (the issue's goal: fused <= 2x EPE)."""
    from lightning_epe.scores import DEFAULT_MEMBERS, ensemble_scores, score_many
    from lightning_epe.scores.ensemble import member_protocol

    def member_alone(net, m):
        return score_many(net, x, y, (m,), {m: member_protocol(m, len(x))})

    members = tuple(args.members.split(",")) if args.members else DEFAULT_MEMBERS
    cells = space.sample(args.ensemble_cells, seed=args.sample_seed, replace=False)
    alone = {m: [] for m in members}
    fused, epe = [], []
    for i, index in enumerate(cells):
        net = build(space, index, args.seed + i, args.C, args.N)
        if i == 0:  # warm-up (allocator, oneDNN primitive caches)
            ensemble_scores(net, x, y, members=members), epe_score(net, x, y)
        runs = {m: [] for m in members}
        fused_runs, epe_runs = [], []
        for _ in range(args.repeats):
            epe_runs.append(timed_cpu(epe_score, net, x, y)[1])
            for m in members:
                runs[m].append(timed_cpu(member_alone, net, m)[1])
            fused_runs.append(timed_cpu(lambda: ensemble_scores(net, x, y, members=members))[1])
        for m in members:
            alone[m].append(statistics.median(runs[m]))
        fused.append(statistics.median(fused_runs))
        epe.append(statistics.median(epe_runs))
        print(f"  ensemble cost: {i + 1}/{len(cells)} cells", flush=True)
    sums = [sum(alone[m][i] for m in members) for i in range(len(cells))]
    result = {"members": list(members), "cells": len(cells), "repeats": args.repeats,
              "epe_cpu_s": statistics.median(epe),
              "alone_cpu_s": {m: statistics.median(v) for m, v in alone.items()},
              "sum_alone_cpu_s": statistics.median(sums), "fused_cpu_s": statistics.median(fused),
              "fused_over_epe": statistics.median(f / e for f, e in zip(fused, epe)),
              "sum_over_epe": statistics.median(s / e for s, e in zip(sums, epe))}
    print(f"ensemble {'+'.join(members)} on {len(cells)} cells (CPU s per cell, median): EPE alone "
          f"{result['epe_cpu_s']:.3f}; " + ", ".join(f"{m} {v:.3f}" for m, v in result["alone_cpu_s"].items())
          + f"; sum {result['sum_alone_cpu_s']:.3f}; fused {result['fused_cpu_s']:.3f} = "
          f"{result['fused_over_epe']:.2f}x EPE (sum of members alone {result['sum_over_epe']:.2f}x; goal <= 2x)")
    return result


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", type=int, default=20, help="cells for per-cell timing and accuracy (>= 20 for the rule)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per path and cell (median)")
    p.add_argument("--throughput-cells", type=int, default=100, help="cells for candidates/second (build + score)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--C", type=int, default=16)
    p.add_argument("--N", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--seed", type=int, default=0, help="cell i is built after torch.manual_seed(seed + i)")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--memory-cells", type=int, default=5, help="full-size cells for peak RSS (0: skip memory)")
    p.add_argument("--growth-cells", type=int, default=500, help="candidates for the no-growth check")
    p.add_argument("--growth-C", type=int, default=8, help="width of the growth-check networks")
    p.add_argument("--growth-N", type=int, default=1, help="depth of the growth-check networks")
    p.add_argument("--tried", action="store_true", help="also measure channels_last and intra-op threads")
    p.add_argument("--tried-cells", type=int, default=6)
    p.add_argument("--tried-compile", action="store_true", help="with --tried: time torch.compile on one cell")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--device", default="cpu", help="cpu (default) or an accelerator, e.g. cuda: see gpu_check.sh")
    p.add_argument("--accelerator-run", action="store_true",
                   help="the accelerator benchmark of gpu_check.sh (implied by --device other than cpu)")
    p.add_argument("--device-pairs", type=int, default=100, help="accelerator: cells timed official vs ours")
    p.add_argument("--space-cells", type=int, default=1000, help="accelerator: cells built and scored end to end")
    p.add_argument("--memory-worker", choices=["official", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--ensemble", action="store_true",
                   help="only the ensemble's cost: each member alone, their sum, the fused pass, EPE alone")
    p.add_argument("--members", default=None, help="with --ensemble: comma-separated (default: DEFAULT_MEMBERS)")
    p.add_argument("--ensemble-cells", type=int, default=20)
    args = p.parse_args(argv)
    if args.memory_worker:
        memory_worker(args)
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device != "cpu" or args.accelerator_run:
        def save(partial):
            if args.json:
                Path(args.json).write_text(json.dumps(partial, indent=1))
        return device_run(args, save)

    space = NB201Space()
    x, y, data_name = load_batch(Path(args.data), args.batch)
    if args.ensemble:
        result = ensemble_cost(args, space, x, y)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return result
    n_cells = max(args.cells, args.throughput_cells)
    cells = space.sample(n_cells, seed=args.sample_seed, replace=False)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "python": platform.python_version(), "load_avg_start": os.getloadavg()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; batch {args.batch} ({data_name}), NB201 C={args.C} N={args.N}",
          flush=True)

    # warm-up (allocator, oneDNN primitive caches) for both paths
    warm = build(space, cells[0], args.seed, args.C, args.N)
    official_score(warm, x, y), ours_score(warm, x, y)
    del warm

    t0 = time.perf_counter()
    per_cell = {"official": [[] for _ in cells], "ours": [[] for _ in cells]}
    per_cell_cpu = {"official": [[] for _ in cells], "ours": [[] for _ in cells]}
    build_s, official_scores, ours_scores = [], [], []
    for i, index in enumerate(cells):
        seconds, net = timed(build, space, index, args.seed + i, args.C, args.N)
        build_s.append(seconds)
        reps = args.repeats if i < args.cells else 1
        for rep in range(reps):
            order = [("official", official_score), ("ours", ours_score)]
            for name, fn in (order if (i + rep) % 2 == 0 else order[::-1]):
                seconds, cpu, value = timed_cpu(fn, net, x, y)
                per_cell[name][i].append(seconds)
                per_cell_cpu[name][i].append(cpu)
                if rep == 0:
                    (official_scores if name == "official" else ours_scores).append(value)
        if (i + 1) % 10 == 0:
            print(f"  {i + 1}/{len(cells)} cells timed ({time.perf_counter() - t0:.0f} s)", flush=True)
        del net

    med = {k: [statistics.median(v) for v in runs] for k, runs in per_cell.items()}
    med_cpu = {k: [statistics.median(v) for v in runs] for k, runs in per_cell_cpu.items()}
    first = {k: [v[0] for v in runs] for k, runs in per_cell.items()}  # one run each, build included below
    n_tp = args.throughput_cells
    timing = {
        "cells": args.cells, "repeats": args.repeats,
        "official_s_per_cell_median": statistics.median(med["official"][:args.cells]),
        "ours_s_per_cell_median": statistics.median(med["ours"][:args.cells]),
        "speedup_median_of_per_cell_ratios": statistics.median(
            o / u for o, u in zip(med["official"][:args.cells], med["ours"][:args.cells])),
        "official_cpu_s_per_cell_median": statistics.median(med_cpu["official"][:args.cells]),
        "ours_cpu_s_per_cell_median": statistics.median(med_cpu["ours"][:args.cells]),
        "cpu_speedup_median_of_per_cell_ratios": statistics.median(
            o / u for o, u in zip(med_cpu["official"][:args.cells], med_cpu["ours"][:args.cells])),
        "wall_speedup_all_cells_one_run_each": sum(first["official"]) / sum(first["ours"]),
        "cpu_speedup_all_cells_one_run_each": sum(v[0] for v in per_cell_cpu["official"])
        / sum(v[0] for v in per_cell_cpu["ours"]),
        "build_s_per_cell_median": statistics.median(build_s),
        "throughput_cells": n_tp,
        "official_candidates_per_s": n_tp / (sum(build_s[:n_tp]) + sum(first["official"][:n_tp])),
        "ours_candidates_per_s": n_tp / (sum(build_s[:n_tp]) + sum(first["ours"][:n_tp])),
    }
    timing["throughput_ratio"] = timing["ours_candidates_per_s"] / timing["official_candidates_per_s"]
    print(json.dumps({"timing": timing}, indent=1), flush=True)

    # accuracy against float64 on the first --cells cells
    truth, reference_path, float64_cpu = [], [], []
    for i, index in enumerate(cells[:args.cells]):
        net = build(space, index, args.seed + i, args.C, args.N)
        _, cpu, value = timed_cpu(lambda: epe_score(net, x, y, precision="float64"))
        truth.append(value)
        float64_cpu.append(cpu / med_cpu["ours"][i])
        reference_path.append(epe_score(net, x, y, reference=True))
    n = args.cells
    same = [a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(official_scores[:n], reference_path)]
    accuracy = {
        "official_procedure": error_summary(official_scores[:n], truth),
        "reference_path": error_summary(reference_path, truth),
        "ours": error_summary(ours_scores[:n], truth),
        "reference_path_equals_official_procedure": f"{sum(same)}/{n} cells bit-for-bit",
        "ours_vs_reference_max_rel_diff": max(
            (abs(a - b) / abs(b) for a, b in zip(ours_scores[:n], reference_path) if math.isfinite(b) and b),
            default=float("nan")),
        "nan_cells_float64": sum(1 for t in truth if not math.isfinite(t)),
        "float64_cpu_time_over_ours_median": statistics.median(float64_cpu),
    }
    ref, ours = accuracy["reference_path"], accuracy["ours"]
    accuracy["rule_median_ok"] = ours["median_rel_error"] <= 1.5 * ref["median_rel_error"]
    accuracy["rule_tau_ok"] = ours["kendall_tau_b"] >= ref["kendall_tau_b"] - 0.02
    print(json.dumps({"accuracy": accuracy}, indent=1), flush=True)

    results = {"machine": machine, "args": vars(args), "timing": timing, "accuracy": accuracy,
               "cells": [space.arch(c) for c in cells[:args.cells]]}
    if args.tried:
        results["tried"] = tried(args, space, x, y, cells[:args.cells], truth, reference_path)
        print(json.dumps({"tried": results["tried"]}, indent=1), flush=True)
    if args.memory_cells:
        results["memory"] = {path: run_memory(args, path) for path in ("official", "ours")}
        print(json.dumps({"memory": results["memory"]}, indent=1), flush=True)
    results["machine"]["load_avg_end"] = os.getloadavg()
    results["wall_s"] = time.perf_counter() - t0
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"done in {results['wall_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
