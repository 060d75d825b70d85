"""Metrics of the top of a ranking: small cases checked by hand or by brute force."""
import importlib
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from lightning_epe.benchmark import (
    bootstrap,
    expected_random_search,
    gap_closed,
    ndcg_at_k,
    precision_at_top,
    simulate_random_search,
)
from lightning_epe.benchmark.top import in_top_probability, top_count


def test_a_perfect_ranking_has_precision_and_ndcg_one_and_a_reversed_one_less():
    acc = np.array([50.0, 60, 70, 80, 90, 91, 92, 93, 94, 95])
    for fraction in (0.1, 0.3, 0.5):
        assert precision_at_top(acc, acc, fraction=fraction) == 1.0
        assert precision_at_top(-acc, acc, fraction=fraction) == 0.0
    assert precision_at_top(acc * 3 + 1, acc, k=4) == 1.0  # only the order counts
    assert ndcg_at_k(acc, acc, k=3) == pytest.approx(1.0)
    assert ndcg_at_k(acc, acc) == pytest.approx(1.0)
    assert ndcg_at_k(-acc, acc, k=3) < 1.0


def test_precision_by_hand():
    acc = np.array([1.0, 2, 3, 4, 5, 6])
    score = np.array([6.0, 5, 1, 2, 3, 4])  # the score's top 2: cells 0 and 1; the true top 2: cells 5 and 4
    assert precision_at_top(score, acc, k=2) == 0.0
    assert precision_at_top(score, acc, k=3) == pytest.approx(1 / 3)  # {0, 1, 5} vs {5, 4, 3}
    assert precision_at_top(score, acc, k=6) == 1.0
    assert top_count(1000, fraction=0.05) == 50 and top_count(10, fraction=0.01) == 1 and top_count(3, k=9) == 3
    with pytest.raises(ValueError, match="exactly one"):
        precision_at_top(score, acc)
    with pytest.raises(ValueError, match="fraction"):
        precision_at_top(score, acc, fraction=1.5)


def test_ties_at_the_cut_count_as_their_expectation():
    # four cells tie for the score's first place; the top 2 then takes each with probability 1/2
    assert np.allclose(in_top_probability(np.array([1.0, 1, 1, 1, 0]), 2), [0.5, 0.5, 0.5, 0.5, 0.0])
    acc = np.array([10.0, 9, 1, 2, 3])
    score = np.array([1.0, 1, 1, 1, 0])
    # brute force over the 4! orders the tie can be broken in
    hits = [len({p[0], p[1]} & {0, 1}) / 2 for p in itertools.permutations(range(4))]
    assert precision_at_top(score, acc, k=2) == pytest.approx(np.mean(hits))
    # NaN scores rank last, together; NaN truth is left out
    assert precision_at_top([np.nan, 1.0, 2.0], [9.0, 1.0, 2.0], k=1) == 0.0
    assert precision_at_top([5.0, 1.0, 2.0], [np.nan, 1.0, 2.0], k=1) == 1.0
    assert math.isnan(precision_at_top([1.0], [np.nan], k=1))


def test_ndcg_by_hand_and_as_scikit_learn_computes_it():
    acc = np.array([3.0, 2, 3, 0, 1, 2])
    score = np.array([6.0, 5, 4, 3, 2, 1])  # the order acc = 3, 2, 3, 0, 1, 2
    dcg = 3 + 2 / np.log2(3) + 3 / np.log2(4) + 0 + 1 / np.log2(6) + 2 / np.log2(7)
    ideal = 3 + 3 / np.log2(3) + 2 / np.log2(4) + 2 / np.log2(5) + 1 / np.log2(6) + 0
    assert ndcg_at_k(score, acc) == pytest.approx(dcg / ideal)
    assert ndcg_at_k(score, acc, k=2) == pytest.approx((3 + 2 / np.log2(3)) / (3 + 3 / np.log2(3)))
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):  # with many ties in the score: VKDNW calls scikit-learn's ndcg_score
        acc = rng.uniform(10, 95, 40)
        score = rng.integers(0, 6, 40).astype(float)
        for k in (1, 5, 40):
            assert ndcg_at_k(score, acc, k=k) == pytest.approx(sklearn.ndcg_score([acc], [score], k=k), rel=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        ndcg_at_k([1.0, 2.0], [-1.0, 2.0])


def _brute_force_pick(scores, acc, n):
    """Mean and std of the pick over every set of n distinct cells, ties among the best split evenly."""
    values = []
    for subset in itertools.combinations(range(len(acc)), n):
        best = max(scores[i] for i in subset)
        tied = [acc[i] for i in subset if scores[i] == best]
        values += [(a, 1 / len(tied)) for a in tied]
    total = sum(w for _, w in values)
    mean = sum(a * w for a, w in values) / total
    return mean, math.sqrt(sum(w * (a - mean) ** 2 for a, w in values) / total)


def test_the_exact_pick_without_replacement_equals_brute_force_enumeration():
    acc = np.array([70.0, 85, 60, 90, 75, 80, 65])
    scores = np.array([1.0, 3, 3, 2, np.nan, 5, 1])  # ties, and a NaN ranked last
    for n in range(1, 8):
        brute = _brute_force_pick(np.nan_to_num(scores, nan=-np.inf), acc, n)
        assert expected_random_search(scores, acc, n, replace=False) == pytest.approx(brute, abs=1e-12)
    assert expected_random_search(scores, acc, 7, replace=False)[0] == 80.0  # every cell drawn: the top score
    with pytest.raises(ValueError, match="distinct cells"):
        expected_random_search(scores, acc, 8, replace=False)
    # with replacement (the default) is unchanged: N = 1 is the table's mean either way
    assert expected_random_search(scores, acc, 1)[0] == pytest.approx(acc.mean())


def test_simulated_runs_without_replacement_agree_with_the_exact_expectation():
    rng = np.random.default_rng(2)
    acc = rng.uniform(40, 90, 300)
    scores = np.round(acc + rng.normal(0, 10, 300))  # rounded: ties
    rows = simulate_random_search(scores, {"a": acc}, ns=[10, 100, 300], runs=3000, seed=0, replace=False)
    for r in rows:
        assert r["mean"] == pytest.approx(r["expected_mean"], abs=4 * r["expected_std"] / math.sqrt(3000) + 1e-9)
    top = acc[scores == scores.max()]  # N = M draws every cell: the pick is one of the top-scored group
    assert rows[-1]["expected_mean"] == pytest.approx(top.mean())
    assert rows[-1]["expected_std"] == pytest.approx(top.std())
    with pytest.raises(ValueError, match="distinct cells"):
        simulate_random_search(scores, {"a": acc}, ns=[301], runs=2, replace=False)


def test_gap_closed_and_the_bootstrap_error():
    assert gap_closed(93.0, 92.0, 94.0) == 0.5 and gap_closed(92.0, 92.0, 94.0) == 0.0
    assert gap_closed(91.0, 92.0, 94.0) == -0.5 and math.isnan(gap_closed(1.0, 2.0, 2.0))
    x = np.random.default_rng(1).normal(5.0, 2.0, 400)
    value, se = bootstrap(lambda rows: float(np.mean(x[rows])), x.size, resamples=400, seed=3)
    assert value == pytest.approx(x.mean())
    assert se == pytest.approx(x.std(ddof=1) / math.sqrt(x.size), rel=0.15)  # the standard error of a mean
    assert bootstrap(lambda rows: 1.0, 10, resamples=5)[1] == 0.0
    with pytest.raises(ValueError, match="resamples"):
        bootstrap(lambda rows: 1.0, 10, resamples=1)


def test_the_shipped_top_weights_are_the_fit_of_the_report(monkeypatch):
    """TOP_WEIGHTS is bench/nb201_top.py's logistic fit on sample 0 (rounded to 2 decimals), not typed in."""
    from lightning_epe.scores import TOP_WEIGHTS
    from tests.conftest import NB201_CSV, load_bench_script, require

    require(NB201_CSV)
    root = Path(__file__).resolve().parents[2]
    monkeypatch.chdir(root)  # the script reads the committed tables relative to the repository root
    load_bench_script("_common")  # puts bench/ on sys.path; a dataclass needs its module in sys.modules
    top = importlib.import_module("nb201_top")
    selection = top.selection_table(str(NB201_CSV))
    assert len(selection.cells) == 500
    weights, c, _ = top.fit_logistic(selection, tuple(TOP_WEIGHTS), 0.20)
    assert c == 10.0
    assert {m: round(w, 2) for m, w in weights.items()} == TOP_WEIGHTS


def test_the_top_report_runs_on_the_committed_samples(tmp_path, monkeypatch):
    """Smoke: without the whole-space table, sample 1 is held out and every section is written."""
    from tests.conftest import NB201_CSV, load_bench_script, require

    require(NB201_CSV)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    load_bench_script("_common")
    top = importlib.import_module("nb201_top")
    assert top.main(["--space", str(tmp_path / "absent.csv"), "--truth", str(NB201_CSV), "--resamples", "2",
                     "--search-resamples", "2", "--runs", "5", "--ns", "10", "1000", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "nb201_top_report.md").read_text()
    assert "Held out: sample 1 (absent.csv absent), 500 cells" in text
    for heading in ("## Goals", "## Why the goals are missed", "## Candidates", "## Held out: each single proxy",
                    "### N = 10", "## Published"):
        assert heading in text
    assert "### N = 1000" not in text  # 1000 distinct cells cannot be drawn from 500
    rows = (tmp_path / "nb201_top_search.csv").read_text().splitlines()
    assert rows[0].startswith("score,n,truth,mean,std,se") and len(rows) > 10


def test_the_held_out_cells_of_a_whole_space_table_exclude_sample_0(tmp_path, monkeypatch):
    import csv

    from tests.conftest import NB201_CSV, load_bench_script, require

    require(NB201_CSV)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    load_bench_script("_common")
    top = importlib.import_module("nb201_top")
    sample0 = top.sample_cells(0)
    header = ["index", *top.SPACE_COLUMNS, "seconds"]
    with (tmp_path / "space.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for i, index in enumerate([sample0[0], 7, 3, sample0[1], 11]):  # two cells of sample 0, three outside
            writer.writerow([index, *(float(i + k) for k in range(len(top.SPACE_COLUMNS))), 1.0])
        writer.writerow([5, *([""] * len(top.SPACE_COLUMNS)), 1.0])  # not scored yet: left out
    table = top.heldout_table(tmp_path / "space.csv", str(NB201_CSV), min_cells=3)
    assert table.cells == sorted({7, 3, 11} - set(sample0))
    assert "outside sample 0" in table.name
    assert set(table.columns) == set(top.SPACE_COLUMNS) and table.truth["cifar10_valid_acc"].shape == (3,)
    few = top.heldout_table(tmp_path / "space.csv", str(NB201_CSV), min_cells=4)  # too few yet: sample 1
    assert len(few.cells) == 500
    assert few.name == "sample 1 (space.csv holds 3 scored cells outside sample 0, fewer than 4)"
