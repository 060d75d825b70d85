"""Draws: a score over several batches and/or initialisations, combined (API, search, callback, CLI, benchmark)."""
import csv
import json
import math
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_epe import CandidateModule, EPEScore
from lightning_epe.benchmark import draw_series, draws_table, run_benchmark
from lightning_epe.cli import main
from lightning_epe.scores import Draws, draw_seed, epe_score, rank_draws, reinitialising, score_draws, seeded
from lightning_epe.search import ArchitectureSearch
from lightning_epe.spaces import NB201Space
from tests.conftest import CIFAR10_SAMPLE, EPE_RESCORED_REL, load_bench_script, require

ROOT = Path(__file__).resolve().parents[2]
ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
TINY = {"C": 4, "N": 1}


def batches(k, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 4) for _ in range(k)]


def build():
    return NB201Space().build(ARCH, num_classes=4, **TINY)


def plain(seed, batch):
    with seeded(seed):
        model = build()
    return epe_score(model, *batch)


# --- the Draws value and the combination rules --------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"k": 0}, "k must be an int >= 1"), ({"k": 2.0}, "k must be an int"), ({"over": "seeds"}, "over must be one of"),
    ({"combine": "max"}, "combine must be one of"),
])
def test_bad_draws_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Draws(**kwargs)


def test_draws_from_dict_int_and_none():
    assert Draws.of(None) == Draws() == Draws.of(1)
    assert Draws.of({"k": 4, "over": "inits"}) == Draws(4, "inits")
    assert Draws.of(3).k == 3 and Draws(np.int64(2)).k == 2 and type(Draws(np.int64(2)).k) is int
    with pytest.raises(ValueError, match="unknown draws key"):
        Draws.of({"k": 2, "batches": 3})
    with pytest.raises(TypeError, match="draws must be"):
        Draws.of("four")


def test_which_batch_and_init_each_draw_uses():
    def plan(over):
        draws = Draws(3, over)
        return [(draws.batch_of(j), draws.init_of(j)) for j in range(3)]

    assert plan("batches") == [(0, 0), (1, 0), (2, 0)]
    assert plan("inits") == [(0, 0), (0, 1), (0, 2)]
    assert plan("both") == [(0, 0), (1, 1), (2, 2)]
    assert (Draws(3, "batches").num_batches, Draws(3, "inits").num_batches, Draws(3, "both").num_batches) == (3, 1, 3)


def test_mean_and_median_leave_out_non_finite_draws():
    assert Draws(3, combine="mean").combine_values([1.0, 3.0, 8.0]) == 4.0
    assert Draws(3, combine="median").combine_values([1.0, 3.0, 8.0]) == 3.0
    assert Draws(3, combine="mean").combine_values([1.0, math.nan, 3.0]) == 2.0
    assert Draws(2, combine="median").combine_values([None, 5.0]) == 5.0
    assert math.isnan(Draws(2).combine_values([math.nan, math.inf]))
    members = Draws(2).combine_values([{"epe": 1.0, "params": 10.0}, {"epe": 3.0, "params": 10.0}])
    assert members == {"epe": 2.0, "params": 10.0}
    with pytest.raises(ValueError, match="rank_draws"):
        Draws(2, combine="rank").combine_values([1.0, 2.0])


def test_rank_rule_is_the_mean_normalised_rank_per_draw():
    # draw 0 ranks the rows 1/3, 2/3, 3/3; draw 1 ranks them 1/3, 3/3, 2/3
    assert rank_draws([[1, 10], [2, 30], [3, 20]]) == pytest.approx([1 / 3, 5 / 6, 5 / 6])
    assert rank_draws([[5.0], [5.0]]) == [0.75, 0.75]  # ties share their average rank
    # a NaN draw is left out of the row's mean and of that draw's ranking; no finite draw -> NaN
    result = rank_draws([[math.nan, 1.0], [2.0, 2.0], [math.nan, None]])
    assert result[:2] == pytest.approx([0.5, 1.0]) and math.isnan(result[2])
    assert rank_draws([]) == []


def test_draw_seeds_are_deterministic_distinct_and_keep_the_plain_seed():
    assert draw_seed(7, 0) == 7
    seeds = [draw_seed(7, j) for j in range(1, 50)] + [draw_seed(8, j) for j in range(1, 50)]
    assert len(set(seeds)) == len(seeds) and seeds[0] == draw_seed(7, 1)
    assert all(0 <= s < 2**63 for s in seeds)  # a valid torch seed


# --- score_draws ---------------------------------------------------------------------------------

@pytest.mark.parametrize("over", ["batches", "inits", "both"])
def test_one_draw_is_the_plain_score(over):
    b = batches(1)
    assert score_draws(build, b, Draws(1, over), seed=3) == [plain(3, b[0])]


def test_each_draw_is_the_score_of_its_batch_and_initialisation():
    b = batches(3)
    assert score_draws(build, b, Draws(3, "batches"), seed=3) == [plain(3, b[j]) for j in range(3)]
    assert score_draws(build, b, Draws(3, "inits"), seed=3) == [plain(draw_seed(3, j), b[0]) for j in range(3)]
    assert score_draws(build, b, Draws(3, "both"), seed=3) == [plain(draw_seed(3, j), b[j]) for j in range(3)]


def test_draws_are_reproducible_and_leave_the_global_rng_alone():
    b = batches(3)
    state = torch.random.get_rng_state()
    first = score_draws(build, b, Draws(3, "both"), seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert score_draws(build, b, Draws(3, "both"), seed=11) == first
    assert score_draws(build, b, Draws(3, "both"), seed=12) != first


def test_networks_are_built_once_over_batches_and_once_per_init_otherwise():
    built = []

    def counting_build():
        built.append(1)
        return build()

    score_draws(counting_build, batches(4), Draws(4, "batches"))
    assert len(built) == 1
    score_draws(counting_build, batches(4), Draws(4, "both"))
    assert len(built) == 5


def test_batches_may_be_a_function_and_too_few_is_an_error():
    b = batches(2)
    assert score_draws(build, lambda j: b[j], Draws(2), seed=1) == score_draws(build, b, Draws(2), seed=1)
    with pytest.raises(ValueError, match="need 3 batches, got 2"):
        score_draws(build, b, Draws(3))


def test_ensemble_draws_are_member_scores():
    values = score_draws(build, batches(2), Draws(2), score="ensemble", members=["epe", "params"])
    assert [set(v) for v in values] == [{"epe", "params"}] * 2 and values[0]["params"] == values[1]["params"]


def test_reinitialising_draws_new_weights_and_restores_the_old():
    torch.manual_seed(0)
    model = build()
    params = list(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with reinitialising(model) as rebuild:
        with seeded(5):
            assert rebuild() is model
        assert not torch.equal(model.state_dict()["classifier.weight"], before["classifier.weight"])
    assert list(model.parameters()) == params  # the same objects: optimisers keep working
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="reset_parameters"):
        with reinitialising(torch.nn.ReLU()):
            pass


# --- the search ----------------------------------------------------------------------------------

def search(draws=None, **kwargs):
    options = dict(budget=4, seed=1, build_options=TINY, progress=False)
    options.update(kwargs)
    return ArchitectureSearch(draws=draws, **options)


def test_search_with_one_draw_is_the_plain_search(tiny_data, tmp_path):
    a = search(results_dir=str(tmp_path / "a")).run(tiny_data).records
    b = search(Draws(1), results_dir=str(tmp_path / "b")).run(tiny_data).records
    assert [r["score"] for r in a] == [r["score"] for r in b] and "draws" not in b[0]
    config = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("a", "b")]
    assert config[0] == config[1]


@pytest.mark.parametrize("policy", ["fixed", "fresh"])
def test_search_draws_combine_per_candidate(tiny_data, policy):
    s = search(Draws(3, "both", "median"), batch_policy=policy)
    records = s.run(tiny_data).records
    plain_records = search(batch_policy=policy).run(tiny_data).records
    for r, p in zip(records, plain_records):
        assert len(r["draws"]) == 3 and r["draws"][0] == p["score"]  # draw 0 is the plain score
        assert r["score"] == pytest.approx(float(np.median(r["draws"])))
    assert records[0]["draws"][1:] != records[1]["draws"][1:]


def test_fixed_policy_scores_every_candidate_on_the_same_k_batches(tiny_data):
    s = search(Draws(2))
    s.run(tiny_data)
    from lightning_epe.search.batches import ScoringBatches

    b = ScoringBatches(tiny_data, None, "fixed", 1, torch.device("cpu"), num_classes=4)
    assert torch.equal(b(0, 1)[0], b(5, 1)[0]) and not torch.equal(b(0, 0)[0], b(0, 1)[0])
    fresh = ScoringBatches(tiny_data, None, "fresh", 1, torch.device("cpu"), num_classes=4)
    assert not torch.equal(fresh(0, 1)[0], fresh(5, 1)[0]) and torch.equal(fresh(3, 1)[0], fresh(3, 1)[0])


def test_search_rank_rule_ranks_the_draws_of_all_candidates(tiny_data, tmp_path):
    result = search(Draws(2, "batches", "rank"), results_dir=str(tmp_path)).run(tiny_data)
    expected = rank_draws([r["draws"] for r in result.records])
    assert [r["score"] for r in result.records] == pytest.approx(expected)
    assert result.best["score"] == max(expected)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best"]["score"] == pytest.approx(max(expected))


def test_search_with_draws_resumes_to_the_uninterrupted_result(tiny_data, tmp_path):
    draws = Draws(2, "inits", "rank")
    search(draws, budget=2, results_dir=str(tmp_path / "r")).run(tiny_data)
    with pytest.raises(RuntimeError, match="different configuration"):  # the budget changed
        search(draws, results_dir=str(tmp_path / "r")).run(tiny_data)
    resumed = search(draws, results_dir=str(tmp_path / "r"), force=True).run(tiny_data).records
    whole = search(draws).run(tiny_data).records
    assert [(r["draws"], r["score"]) for r in resumed] == [(r["draws"], r["score"]) for r in whole]
    with pytest.raises(RuntimeError, match="different configuration"):  # other draws
        search(Draws(3, "inits", "rank"), results_dir=str(tmp_path / "r")).run(tiny_data)


def test_rank_draws_of_an_ensemble_is_refused():
    with pytest.raises(ValueError, match="already ranks candidates"):
        search(Draws(2, combine="rank"), score="ensemble")


def test_search_ensemble_with_draws_averages_member_scores(tiny_data):
    records = search(Draws(2), score="ensemble", score_options={"members": ["epe", "params"]}).run(tiny_data).records
    for r in records:
        assert r["scores"]["epe"] == pytest.approx(np.mean([d["epe"] for d in r["draws"]]))


# --- the callback --------------------------------------------------------------------------------

def loader(n=64):
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 4), batch_size=16)


def fit(callback, module, steps=1):
    L.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[callback], logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(module, loader())


def candidate_module():
    torch.manual_seed(0)
    return CandidateModule(ARCH, num_classes=4, build_options=TINY)


def test_callback_draws_over_the_first_batches():
    m = candidate_module()
    expected = [epe_score(m, *b) for _, b in zip(range(3), loader())]
    callback = EPEScore(draws=Draws(3, "batches"))
    fit(callback, m)
    assert callback.values == expected and callback.value == pytest.approx(np.mean(expected))


def test_callback_draws_over_inits_start_with_the_module_and_restore_it():
    m = candidate_module()
    batch = next(iter(loader()))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    callback = EPEScore(batch=batch, draws={"k": 3, "over": "inits", "combine": "median"}, seed=4,
                        min_score=math.inf)  # stops before any step: the weights must be the same after
    fit(callback, m)
    assert callback.values[0] == epe_score(m, *batch) and len(set(callback.values)) == 3
    assert callback.value == float(np.median(callback.values))
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_callback_training_is_unchanged_by_draws_over_inits():
    runs = []
    for callbacks in ([], [EPEScore(draws=Draws(2, "both"))]):
        L.seed_everything(0)
        m = candidate_module()
        L.Trainer(max_steps=2, accelerator="cpu", devices=1, callbacks=callbacks, logger=False, deterministic=True,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(m, loader())
        runs.append(m.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_callback_draw_errors():
    with pytest.raises(ValueError, match="use 'mean' or 'median'"):
        EPEScore(draws=Draws(2, combine="rank"))
    callback = EPEScore(batch=next(iter(loader())), draws=Draws(2, "batches"))
    with pytest.raises(ValueError, match="needs 2 batches, got 1"):
        callback.on_train_start(None, candidate_module())


# --- the command line ----------------------------------------------------------------------------

def test_cli_draws_from_yaml_and_flags(tmp_path):
    recipe = tmp_path / "draws.yaml"
    recipe.write_text((ROOT / "recipes" / "quickstart.yaml").read_text() + "\n")
    fast = ["--search.budget", "3", "--search.build_options", '{"C": 2, "N": 1}', "--search.batch_size", "16",
            "--search.progress", "false"]
    assert main(["score", "--config", str(recipe), "--results_dir", str(tmp_path / "r"), *fast,
                 "--search.draws.k", "2", "--search.draws.over", "both"]) == 0
    records = [json.loads(line) for line in (tmp_path / "r" / "scores.jsonl").read_text().splitlines()]
    assert all(len(r["draws"]) == 2 and r["score"] == pytest.approx(np.mean(r["draws"])) for r in records)
    assert json.loads((tmp_path / "r" / "config.json").read_text())["draws"] == {"k": 2, "over": "both",
                                                                               "combine": "mean"}
    assert main(["score", "--config", str(recipe), *fast, "--search.draws.over", "seeds"]) == 2


# --- the benchmark -------------------------------------------------------------------------------

def draw_columns(n=300, seed=0):
    """Scores = truth + independent noise per draw: more draws must rank better."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=n)
    columns = {f"s@b{j}": truth + rng.normal(scale=1.5, size=n) for j in range(8)}
    columns.update({f"s@i{j}": truth + rng.normal(scale=1.5, size=n) for j in range(1, 4)})
    columns.update({"seconds_build": np.full(n, 0.5), "seconds_score": np.full(n, 1.0)})
    return truth, columns


def test_draw_series_parse_column_names():
    series = draw_series(["epe", "epe@b0", "epe@b1", "epe@b2", "epe@i1", "epe@i3", "x@d1", "seconds_build"])
    assert series == {("epe", "batches"): ["epe@b0", "epe@b1", "epe@b2"], ("epe", "inits"): ["epe@b0", "epe@i1"]}


def test_draws_table_more_draws_rank_better_and_cost_more():
    truth, columns = draw_columns()
    rows = draws_table(columns, {"acc": truth}, ks=[1, 2, 4, 8])
    tau = {(r["over"], r["k"], r["rule"]): r["tau"] for r in rows}
    assert tau[("batches", 8, "mean")] > tau[("batches", 4, "mean")] > tau[("batches", 1, "single")] + 0.1
    assert ("inits", 4, "rank") in tau and ("inits", 8, "mean") not in tau  # 4 init draws exist
    cost = {(r["over"], r["k"]): r["seconds_per_cell"] for r in rows}
    assert cost[("batches", 4)] == 0.5 + 4 * 1.0 and cost[("inits", 4)] == 4 * 1.5


def test_draws_table_compares_every_k_on_the_same_cells():
    truth, columns = draw_columns()
    present = {c: np.ones(300, bool) for c in columns}
    for j in range(4, 8):  # draws 4..7 only for the first 100 cells
        present[f"s@b{j}"] = np.arange(300) < 100
    rows = draws_table(columns, {"acc": truth}, has_value=present.__getitem__, ks=[1, 2, 4, 8])
    blocks = {}
    for r in rows:
        blocks.setdefault((r["over"], r["cells"]), set()).add(r["k"])
    blocks = {key: sorted(ks) for key, ks in blocks.items()}
    assert blocks == {("batches", 300): [1, 2, 4], ("batches", 100): [1, 2, 4, 8], ("inits", 300): [1, 2, 4]}


def test_run_benchmark_writes_the_k_table(tmp_path):
    from tests.benchmark.test_benchmark import write_truth

    acc = write_truth(tmp_path / "gt.csv", n=40)
    rng = np.random.default_rng(1)
    with (tmp_path / "draws.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "epe", "epe@b0", "epe@b1", "epe@i1", "seconds_build", "seconds_score"])
        for i in range(40):
            noisy = [acc["cifar10_valid_acc"][i] + rng.normal(scale=20) for _ in range(3)]
            w.writerow([i, noisy[0], noisy[0], noisy[1], "" if i >= 20 else noisy[2], 0.1, 1.0])
    result = run_benchmark(str(tmp_path / "draws.csv"), str(tmp_path / "gt.csv"), str(tmp_path / "out"), runs=5,
                           ns=[2], plots=False)
    assert {r["score"] for r in result["correlations"]} == {"epe"}  # draw columns are not benchmarked one by one
    rows = list(csv.DictReader(open(tmp_path / "out" / "draws.csv")))
    assert {(r["over"], r["cells"], r["k"]) for r in rows} == {
        ("batches", "40", "1"), ("batches", "40", "2"), ("inits", "20", "1"), ("inits", "20", "2")}
    assert "## Draws (k-table)" in (tmp_path / "out" / "report.md").read_text()


# --- the committed result ------------------------------------------------------------------------

COMMITTED_DRAWS = ROOT / "docs" / "benchmarks" / "nb201_cifar10_draws.csv"
COMMITTED = ROOT / "docs" / "benchmarks" / "nb201_cifar10.csv"


def _bench_module():
    return load_bench_script("nb201_draws")


@pytest.mark.slow
def test_committed_draws_reproduce_with_score_draws():
    """One full-size cell of the k = 8 subset rescored with the library's draws (about 5 s on 2 cores)."""
    require(CIFAR10_SAMPLE)
    if not COMMITTED_DRAWS.exists():
        pytest.skip(f"{COMMITTED_DRAWS} not generated yet")
    bench = _bench_module()
    rows = [r for r in csv.DictReader(open(COMMITTED_DRAWS)) if r["epe@d2"] and math.isfinite(float(r["epe@b0"]))]
    if not rows:
        pytest.skip(f"{COMMITTED_DRAWS} has no cell of the k = 8 subset yet")
    row = min(rows, key=lambda r: (r["arch_str"].count("nor_conv_3x3"), r["arch_str"].count("nor_conv_1x1")))
    index = int(row["index"])
    b = bench.load_batches(str(CIFAR10_SAMPLE), 3)
    space = NB201Space()

    def build_cell():
        return space.build(index, num_classes=10, C=16, N=5)

    both = score_draws(build_cell, b, Draws(3, "both"), seed=index)
    # committed on another machine: EPE moves with the CPU's kernels (EPE_RESCORED_REL says how far)
    assert both == pytest.approx([float(row[c]) for c in ("epe@b0", "epe@d1", "epe@d2")], rel=EPE_RESCORED_REL)
    over_batches = score_draws(build_cell, b, Draws(2, "batches"), seed=index)
    assert over_batches[1] == pytest.approx(float(row["epe@b1"]), rel=EPE_RESCORED_REL)


def test_committed_epe_k4_is_the_mean_of_four_batch_draws():
    """The rule the benchmark found best (docs/benchmarks/README.md): the mean of draws b0..b3."""
    if not (COMMITTED_DRAWS.exists() and COMMITTED.exists()):
        pytest.skip("the committed draws benchmark is not generated yet")
    table = list(csv.DictReader(open(COMMITTED)))
    assert list(table[0]) == ["index", "arch_str", "seed", "epe", "epe_k4"]
    draws = {r["index"]: [float(r[f"epe@b{j}"]) for j in range(4)] for r in csv.DictReader(open(COMMITTED_DRAWS))}
    assert [r["index"] for r in table] == list(draws)  # the same cells, in the same (sample) order
    k4 = [float(r["epe_k4"]) for r in table]
    assert np.allclose(k4, [Draws(4).combine_values(draws[r["index"]]) for r in table], rtol=1e-15, equal_nan=True)

def test_benchmark_reads_the_draws_of_a_search(tmp_path, capsys):
    from tests.conftest import NB201_CSV

    truth = require(NB201_CSV)
    results = tmp_path / "search"
    assert main(["score", "--config", str(ROOT / "recipes/quickstart.yaml"), "--results_dir", str(results),
                 "--search.budget", "6", "--search.build_options", '{"C": 2, "N": 1}', "--search.batch_size", "16",
                 "--search.progress", "false", "--search.draws.k", "2", "--search.draws.over", "inits"]) == 0
    out = tmp_path / "bench"
    assert main(["benchmark", "--scores", str(results / "scores.jsonl"), "--ground_truth", str(truth),
                 "--out_dir", str(out), "--runs", "5", "--ns", "[2]", "--plots", "false"]) == 0
    rows = list(csv.DictReader(open(out / "draws.csv")))
    assert {(r["score"], r["over"], r["k"]) for r in rows} >= {("score", "inits", "1"), ("score", "inits", "2")}
    records = [json.loads(line) for line in (results / "scores.jsonl").read_text().splitlines()]
    assert [r["n"] for r in csv.DictReader(open(out / "correlations.csv"))][0] == str(len(records))


def test_draws_bench_script_adds_missing_draws_and_merges(tmp_path, monkeypatch):
    bench = _bench_module()
    monkeypatch.setattr(bench, "load_batches", lambda path, count=8: None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep this test session's threads
    calls = []

    def fake_score_cell(space, index, batches, columns):
        calls.append((index, list(columns)))
        return {**{c: index + bench.DRAW_COLUMNS.index(c) / 100 for c in columns},
                "seconds_build": 0.1, "seconds_score": 0.2}

    monkeypatch.setattr(bench, "score_cell", fake_score_cell)
    out = str(tmp_path / "draws.csv")
    common = ["--out", out, "--cells", "4", "--full-cells", "1", "--data", "unused"]
    bench.main([*common, "--batches", "2"])
    sample = bench.sample_cells(4, 0)
    assert [(i, len(c)) for i, c in calls] == [(sample[1], 2), (sample[2], 2), (sample[3], 2), (sample[0], 22)]
    calls.clear()
    bench.main([*common, "--batches", "2", "--inits", "3"])  # adds inits and both to the scored cells
    assert [c for _, c in calls] == [["epe@i1", "epe@i2", "epe@d1", "epe@d2"]] * 3
    calls.clear()
    bench.main([*common, "--batches", "2", "--inits", "3", "--shard", "1/2"])
    assert calls == []  # nothing left
    assert bench.merge(["--out", out, "--cells", "4"]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [int(r["index"]) for r in rows] == sample
    assert all(float(r["epe@d2"]) == int(r["index"]) + bench.DRAW_COLUMNS.index("epe@d2") / 100 for r in rows)
    assert rows[1]["epe@b3"] == "" and rows[0]["epe@b7"] != ""
