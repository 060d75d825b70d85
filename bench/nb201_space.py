"""The whole NAS-Bench-201 space scored by the product: export the search's records as a table, and check them.

The scores come from ``lightning-epe score --config bench/nb201_space.yaml`` (an exhaustive search whose ensemble
members are the table's columns, two CPU processes through Lightning's DDP, one results directory resumed after
every stop; the protocol is in that file). This script only reads the results directory::

    python bench/nb201_space.py export RESULTS_DIR      # -> docs/benchmarks/nb201_space.csv, and the soak checks
    python bench/nb201_space.py check --rows 8           # rescore committed rows through the search, compare

``export`` refuses a directory whose records were lost, duplicated or mixed (another configuration, a trial whose
candidate or seed is not the cell's index, two different records for one cell), and prints what it checked. A cell
whose member value is not finite is written ``nan`` (the store records NaN and -inf as null; both rank last).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import yaml
from _common import read_rows, replace_csv

from lightning_epe.search import store

CONFIG = Path(__file__).with_name("nb201_space.yaml")
TABLE = Path("docs/benchmarks/nb201_space.csv")
SPACE_SIZE = 15625


def members() -> list[str]:
    return yaml.safe_load(CONFIG.read_text())["search"]["score_options"]["members"]


def header() -> list[str]:
    return ["index", "arch_str", "seed", *members(), "seconds"]


def read_records(results_dir: Path) -> tuple[list[dict], dict]:
    """Every whole line of ``scores.jsonl`` (in file order), and the soak counts: duplicates, mixed records."""
    config_id = store.config_id(json.loads((results_dir / "config.json").read_text()))
    lines = (results_dir / "scores.jsonl").read_bytes().split(b"\n")
    torn = lines.pop() != b""  # a kill between two writes leaves a partial last line; the search cuts it off
    records, by_trial = [], {}
    counts = {"lines": len(lines), "torn_last_line": torn, "identical_repeats": 0}
    problems = []
    for number, raw in enumerate(lines, start=1):
        record = json.loads(raw)
        trial = record["trial"]
        where = f"{results_dir / 'scores.jsonl'}:{number}"
        if record.get("config_id") != config_id:
            problems.append(f"{where}: config_id {record.get('config_id')} is not the directory's {config_id}")
        if not (record["candidate"] == trial == record["seed"]):
            problems.append(f"{where}: trial {trial}, candidate {record['candidate']}, seed {record['seed']} differ")
        if record.get("error") is not None:
            problems.append(f"{where}: cell {trial} failed: {record['error']}")
        if trial in by_trial:
            same = {k: v for k, v in by_trial[trial].items() if k != "seconds"} == \
                   {k: v for k, v in record.items() if k != "seconds"}
            if not same:
                problems.append(f"{where}: a second, different record for cell {trial}")
            counts["identical_repeats"] += same
            continue
        by_trial[trial] = record
        records.append(record)
    counts["problems"] = problems
    return records, counts


def export(args) -> int:
    records, counts = read_records(Path(args.results_dir))
    names = members()
    done = sorted(r["trial"] for r in records)
    missing = sorted(set(range(max(done) + 1)) - set(done)) if done else []
    rows = []
    for record in sorted(records, key=lambda r: r["trial"]):
        values = record["scores"]
        rows.append({"index": record["trial"], "arch_str": record["arch"], "seed": record["seed"],
                     **{m: "nan" if values[m] is None else repr(float(values[m])) for m in names},
                     "seconds": f"{record['seconds']:.3f}"})
    seconds = [r["seconds"] for r in records]
    print(f"{len(records)} cells of {SPACE_SIZE} ({len(records) / SPACE_SIZE:.1%}); lines {counts['lines']}, "
          f"identical repeats {counts['identical_repeats']}, torn last line {counts['torn_last_line']}; "
          f"cells missing below the highest scored one: {len(missing)}")
    if seconds:
        print(f"seconds per cell (one process, one thread, as recorded): median {statistics.median(seconds):.2f}, "
              f"total {sum(seconds) / 3600:.2f} process-hours")
    for problem in counts["problems"][:20]:
        print("PROBLEM", problem)
    if counts["problems"]:
        print(f"{len(counts['problems'])} problem(s): nothing exported", file=sys.stderr)
        return 1
    replace_csv(args.out, header(), rows)
    print(f"wrote {args.out}")
    return 0


def rescore(indices: list[int], data: str) -> dict[int, dict[str, float]]:
    """The member values of ``indices`` computed as the search computes them (its own ``score_candidate``)."""
    import torch

    from lightning_epe import ArchitectureSearch
    from lightning_epe.data import NPZDataModule
    from lightning_epe.search.batches import ScoringBatches
    from lightning_epe.spaces import NB201Space

    config = yaml.safe_load(CONFIG.read_text())
    processes = ("space", "accelerator", "devices", "strategy")  # one process here, on the CPU
    search_args = {k: v for k, v in config["search"].items() if k not in processes}
    search = ArchitectureSearch(NB201Space(), **search_args, progress=False)
    datamodule = NPZDataModule(data, batch_size=config["data"]["init_args"]["batch_size"])
    batches = ScoringBatches(datamodule, search.batch_size, search.batch_policy, search.seed, torch.device("cpu"),
                             num_classes=search.num_classes)
    builder = search.space.builder(torch.device("cpu"), search.num_classes, **search.build_options)
    try:
        out = {}
        for index in indices:
            record = search.score_candidate(index, index, batches, builder)
            if record["error"]:
                raise RuntimeError(f"cell {index}: {record['error']}")
            out[index] = {m: math.nan if v is None else v for m, v in record["scores"].items()}
        return out
    finally:
        builder.close()


def check(args) -> int:
    rows = read_rows(args.table)
    step = max(1, len(rows) // args.rows)
    chosen = rows[::step][: args.rows]
    values = rescore([int(r["index"]) for r in chosen], args.data)
    worst: dict[str, float] = {}
    for row in chosen:
        for name, value in values[int(row["index"])].items():
            committed = float(row[name])
            if not (math.isfinite(value) and math.isfinite(committed)):
                diff = 0.0 if not math.isfinite(value) and math.isnan(committed) else math.inf
            else:
                diff = abs(value - committed) / max(abs(committed), 1e-12)
            worst[name] = max(worst.get(name, 0.0), diff)
    print(f"{len(chosen)} committed rows rescored; the largest relative difference per column:")
    for name, diff in worst.items():
        print(f"  {name:18s} {diff:.2e}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("export", help="the results directory's records -> the table, with the soak checks")
    p.add_argument("results_dir")
    p.add_argument("--out", default=str(TABLE))
    p.set_defaults(run=export)
    p = sub.add_parser("check", help="rescore committed rows through the search and compare")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--table", default=str(TABLE))
    p.add_argument("--data", default="../shared/data/cifar10/cifar10_sample.npz")
    p.set_defaults(run=check)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
