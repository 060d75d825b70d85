"""The whole-space NB201 table (docs/benchmarks/nb201_space.csv): its integrity, and committed rows that reproduce
through the search itself (bench/nb201_space.py's ``rescore``: the search's own ``score_candidate``)."""
import csv
import math
from pathlib import Path

import pytest

from lightning_epe.spaces import NB201Space
from tests.conftest import CIFAR10_SAMPLE, COMMITTED_RTOL, load_bench_script, require

ROOT = Path(__file__).resolve().parents[2]
space_bench = load_bench_script("nb201_space")


@pytest.fixture(scope="module")
def table():
    with open(ROOT / space_bench.TABLE) as f:
        return list(csv.DictReader(f))


def test_the_table_holds_each_cell_once_with_its_arch_and_seed(table):
    assert list(table[0]) == space_bench.header()
    indices = [int(r["index"]) for r in table]
    assert indices == sorted(set(indices)) and indices[0] == 0
    space = NB201Space()
    assert all(r["arch_str"] == space.arch(int(r["index"])) and r["seed"] == r["index"] for r in table)
    assert all(float(r["params"]) > 0 for r in table)  # every cell was scored (no failed record is exported)


def test_committed_rows_reproduce_through_the_search(table):
    """Two cheap finite cells, rescored as the search scores them: bit for bit on the machine that scored them,
    within each column's measured spread over emulated CPUs elsewhere (COMMITTED_RTOL, tests/conftest.py)."""
    require(CIFAR10_SAMPLE)
    names = space_bench.members()
    finite = [r for r in table if all(math.isfinite(float(r[n])) for n in names)]
    cheap = sorted(finite, key=lambda r: (r["arch_str"].count("conv_3x3"), r["arch_str"].count("conv_1x1")))[:2]
    values = space_bench.rescore([int(r["index"]) for r in cheap], str(CIFAR10_SAMPLE))
    for row in cheap:
        for name in names:
            expected = float(row[name])
            assert abs(values[int(row["index"])][name] - expected) <= COMMITTED_RTOL[name] * abs(expected), name
