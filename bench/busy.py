"""The quickstart's scoring on a busy machine: 0 and N CPU-bound neighbours, passive vs active OpenMP waiting.

Each run is ``lightning-epe score --config recipes/quickstart.yaml`` (30 NB201 cells scored, no training)
in a fresh results directory, timed wall-clock. Neighbours are ``python -c "while True: pass"``
processes started before the run and killed after it. ``passive`` is the command's default since 0.2
(``OMP_WAIT_POLICY=PASSIVE`` unless set); ``active`` sets ``OMP_WAIT_POLICY=ACTIVE``, what torch's
OpenMP did before (its threads spin while waiting). Torch's default thread count in both::

    python bench/busy.py                    # 0 and 2 neighbours, passive and active (~3-10 min on 2 cores)
    python bench/busy.py --neighbours 0 2 4 --policies passive
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def score_once(policy: str, workdir: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    results = workdir / f"run-{policy}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "lightning_epe.cli", "score", "--config", str(ROOT / "recipes/quickstart.yaml"),
               "--results_dir", str(results), "--search.progress", "false"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--neighbours", type=int, nargs="+", default=[0, 2])
    p.add_argument("--policies", nargs="+", default=["passive", "active"], choices=["passive", "active"])
    args = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="busy-"))
    times: dict[tuple[str, int], float] = {}
    try:
        for n in args.neighbours:
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
            try:
                for policy in args.policies:
                    times[policy, n] = score_once(policy, workdir)
                    print(f"{policy:8s} {n} neighbour(s): {times[policy, n]:.1f} s", flush=True)
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\n{os.cpu_count()} cores; quickstart scoring, wall seconds (slowdown vs no neighbours):")
    for policy in args.policies:
        base = times.get((policy, 0))
        cells = [f"{n}: {times[policy, n]:.1f} s" + (f" ({times[policy, n] / base:.1f}x)" if base and n else "")
                 for n in args.neighbours]
        print(f"  {policy:8s} " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
