import importlib.util
import json
import math
import random

import pytest
import torch

from lightning_epe.search import (
    ArchitectureSearch,
    ConfigMismatchError,
    RegularizedEvolution,
    ResultsStore,
    make_strategy,
)
from lightning_epe.spaces import NB201Space
from lightning_epe.spaces.base import CandidateSpace

TINY = {"C": 2, "N": 1}
EVOLUTION_4_2 = RegularizedEvolution(population=4, sample_size=2)


def search(**kw):
    options = dict(budget=6, seed=0, build_options=TINY, accelerator="cpu", progress=False)
    options.update(kw)
    return ArchitectureSearch(**options)


def test_random_search_records_and_best(tiny_data):
    result = search().run(tiny_data)
    assert [r["trial"] for r in result.records] == list(range(6))
    assert [r["candidate"] for r in result.records] == NB201Space().sample(6, seed=0)
    scored = [r for r in result.records if r["score"] is not None]
    assert result.best["score"] == max(r["score"] for r in scored)
    for r in result.records:
        assert r["arch"] == NB201Space().arch(r["candidate"]) and r["seconds"] >= 0


def test_scores_are_reproducible_and_match_the_plain_function(tiny_data):
    from lightning_epe.scores import epe_score
    from lightning_epe.search.batches import ScoringBatches

    s = search()
    first = s.run(tiny_data).records
    assert [r["score"] for r in search().run(tiny_data).records] == [r["score"] for r in first]
    x, y = ScoringBatches(tiny_data, None, "fixed", 0, torch.device("cpu"))(0)
    torch.manual_seed(first[0]["seed"])
    net = NB201Space().build(first[0]["candidate"], num_classes=4, **TINY)
    assert first[0]["score"] == epe_score(net, x, y)


def test_fixed_and_fresh_batches(tiny_data):
    from lightning_epe.search.batches import ScoringBatches

    fixed = ScoringBatches(tiny_data, 8, "fixed", 0, torch.device("cpu"))
    assert torch.equal(fixed(0)[0], fixed(5)[0])
    fresh = ScoringBatches(tiny_data, 8, "fresh", 0, torch.device("cpu"))
    assert not torch.equal(fresh(0)[0], fresh(1)[0])
    assert torch.equal(fresh(1)[0], ScoringBatches(tiny_data, 8, "fresh", 0, torch.device("cpu"))(1)[0])
    with pytest.raises(ValueError, match="fixed, fresh"):
        ScoringBatches(tiny_data, 8, "stale", 0, torch.device("cpu"))


def test_strategies():
    space = NB201Space()
    without = make_strategy("random_without_replacement", space, 50, 1)
    drawn = [without.ask() for _ in range(50)]
    assert len(set(drawn)) == 50 and without.ask() is None
    ex = make_strategy("exhaustive", space, 7, 0)
    assert [ex.ask() for _ in range(8)] == [0, 1, 2, 3, 4, 5, 6, None]
    with pytest.raises(ValueError, match="available: random"):
        make_strategy("annealing", space, 5, 0)


def test_evolution_mutates_the_fittest_and_is_deterministic():
    space = NB201Space()

    def run():
        strategy = make_strategy(RegularizedEvolution(population=8, sample_size=3), space, 40, 3)
        asked = []
        while (c := strategy.ask()) is not None:
            asked.append(c)
            strategy.tell(c, float(c % 97))  # any deterministic fitness
        return asked

    asked = run()
    assert asked == run() and len(asked) == 40
    assert asked[:8] == space.sample(8, seed=3)
    for child in asked[8:]:  # every child is one edge away from some earlier candidate
        diffs = [sum(a != b for a, b in zip(space.arch(child).split("|"), space.arch(p).split("|")))
                 for p in asked[: asked.index(child)]]
        assert 1 in diffs


def test_nb201_mutate_changes_exactly_one_edge():
    space, rng = NB201Space(), random.Random(0)
    for i in space.sample(20, seed=1):
        j = space.mutate(i, rng)
        a, b = space.arch(i).split("|"), space.arch(j).split("|")
        assert sum(x != y for x, y in zip(a, b)) == 1


class FlakySpace(CandidateSpace):
    """Candidate 2 fails to build, candidate 4 raises in forward, candidate 3 has zero gradients."""

    name = "flaky"

    def sample(self, n, seed=None, replace=True):
        return list(range(n))

    def build(self, candidate, num_classes=10, **options):
        if candidate == 2:
            raise RuntimeError("cannot build candidate 2")
        all_none = NB201Space().index("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
        net = NB201Space().build(1601 if candidate != 3 else all_none, num_classes=num_classes, C=2, N=1)
        if candidate == 4:
            net.forward = lambda x: (_ for _ in ()).throw(ValueError("boom in forward"))
        return net


def test_failing_candidates_are_recorded_and_the_search_goes_on(tiny_data, tmp_path):
    result = ArchitectureSearch(FlakySpace(), budget=6, accelerator="cpu", progress=False,
                                results_dir=str(tmp_path)).run(tiny_data)
    by = {r["candidate"]: r for r in result.records}
    assert "cannot build candidate 2" in by[2]["error"] and by[2]["score"] is None
    assert "boom in forward" in by[4]["error"]
    assert by[3]["score"] is None and by[3]["error"] is None  # NaN: undefined, not failed
    assert result.best["candidate"] in (0, 1, 5)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failed"] == 2 and summary["nan"] == 1 and summary["scored"] == 3


def test_all_failing_is_a_clear_error(tiny_data):
    class Broken(FlakySpace):
        def build(self, candidate, num_classes=10, **options):
            raise RuntimeError("nope")

    with pytest.raises(RuntimeError, match="none of the 3 candidates"):
        ArchitectureSearch(Broken(), budget=3, accelerator="cpu", progress=False).run(tiny_data)


def test_resume_scores_only_missing_trials_and_equals_uninterrupted_run(tiny_data, tmp_path):
    full = search(results_dir=str(tmp_path / "full"), search_strategy=EVOLUTION_4_2, budget=12).run(tiny_data)
    part = tmp_path / "part"
    search(results_dir=str(part), search_strategy=EVOLUTION_4_2, budget=12).run(tiny_data)
    lines = (part / "scores.jsonl").read_text().splitlines(keepends=True)
    (part / "scores.jsonl").write_text("".join(lines[:5]) + lines[5][:17])  # killed mid-write
    resumed = search(results_dir=str(part), search_strategy=EVOLUTION_4_2, budget=12)
    calls = []
    original = resumed.score_candidate
    resumed.score_candidate = lambda *a, **k: calls.append(a[1]) or original(*a, **k)
    result = resumed.run(tiny_data)
    assert calls == list(range(5, 12))
    strip = lambda rs: [{k: r[k] for k in ("trial", "candidate", "score")} for r in rs]  # noqa: E731
    assert strip(result.records) == strip(full.records)
    on_disk = [json.loads(line) for line in (part / "scores.jsonl").read_text().splitlines()]
    assert sorted(r["trial"] for r in on_disk) == list(range(12))


def test_changed_config_is_refused_unless_forced(tiny_data, tmp_path):
    search(results_dir=str(tmp_path)).run(tiny_data)
    with pytest.raises(ConfigMismatchError, match="changed: budget"):
        search(results_dir=str(tmp_path), budget=7).run(tiny_data)
    assert len(search(results_dir=str(tmp_path), budget=7, force=True).run(tiny_data).records) == 7


def test_unwritable_results_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError, match="not writable"):
        ResultsStore(blocker / "sub")


def test_store_refuses_garbage_lines(tmp_path):
    (tmp_path / "scores.jsonl").write_text('{"trial": 0, "candidate": 5, "score": 1.0}\nnot json\n')
    with pytest.raises(ValueError, match="scores.jsonl:2"):
        ResultsStore(tmp_path)


def test_results_directories_of_0_1_still_resume(tiny_data, tmp_path):
    first = search(results_dir=str(tmp_path), budget=3).run(tiny_data)
    config = json.loads((tmp_path / "config.json").read_text())
    old = {k: v for k, v in config.items() if k != "strategy_options"}
    (tmp_path / "config.json").write_text(json.dumps({**old, "population": 20, "sample_size": 5}))  # 0.1's form
    resumed = search(results_dir=str(tmp_path), budget=3)
    resumed.score_candidate = lambda *a, **k: pytest.fail("a resumed search scored a stored trial again")
    assert [r["score"] for r in resumed.run(tiny_data).records] == [r["score"] for r in first.records]


def test_deprecated_strategy_arguments_warn_and_keep_working():
    with pytest.warns(DeprecationWarning, match="search_strategy='evolution'"):
        s = ArchitectureSearch(strategy="evolution", budget=4, progress=False)
    assert s.search_strategy == "evolution" and s.strategy == "auto"
    with pytest.warns(DeprecationWarning, match="distributed_strategy"):
        assert ArchitectureSearch(distributed_strategy="ddp", progress=False).strategy == "ddp"
    with pytest.warns(DeprecationWarning, match="RegularizedEvolution"):
        s = ArchitectureSearch(search_strategy="evolution", population=8, sample_size=2, progress=False)
    assert s.config()["strategy_options"] == {"population": 8, "sample_size": 2}
    with pytest.raises(ValueError, match="apply to the evolution strategy"):
        with pytest.warns(DeprecationWarning):
            ArchitectureSearch(population=8, progress=False)


GOOD = b'{"candidate": 5, "error": null, "score": 1.0, "seconds": 0.1, "trial": 0}\n'


@pytest.mark.parametrize("line, message", [
    (b'\xff\xfe{"trial": 1}', "not UTF-8 text: byte 0xff at column 1"),
    (b'{"trial": 1, "score": 2.0}', "no 'candidate'"),
    (b'{"trial": 1, "candidate": 7, "score": "2.5"}', "'score' must be a number or null, got '2.5'"),
    (b'{"candidate": 7, "score": 2.5}', "no 'trial'"),
    (b'{"trial": -1, "candidate": 7, "score": 2.5}', "'trial' must be an int >= 0, got -1"),
    (b"[1, 2]", "a JSON list, not an object"),
    (b'{"trial": 1, "candidate": 7, "score": 2.5, "error": "ValueError: boom"}',
     "it has both an 'error' and a 'score' (2.5): a failed record has score null"),
    (b'{"trial": 1, "candidate": 7, "score": NaN}', "NaN is not a JSON number (the library writes null"),
    (b'{"trial": 1, "candidate": 7, "score": 1.0, "seconds": -Infinity}', "-Infinity is not a JSON number"),
    (b'{"trial": 1, "candidate": 7, "score": 1.0, "seconds": "0.5"}', "'seconds' must be a number, got '0.5'"),
    (b'{"trial": 1, "candidate": 7, "score": 1.0, "error": 3}', "'error' must be a string or null, got 3"),
    (b'{"trial": 1, "candidate": 7, "score": 1.0, "config_id": 12}', "'config_id' must be a string or null"),
    (b'{"trial": 1, "candidate": null, "score": 1.0}', "'candidate' must be an int, a str or a list, got None"),
], ids=["binary", "no_candidate", "string_score", "no_trial", "negative_trial", "not_an_object", "error_and_score",
        "bare_nan", "bare_infinity", "string_seconds", "int_error", "int_config_id", "null_candidate"])
def test_damaged_records_are_refused_with_file_and_line(line, message, tmp_path):
    data = GOOD + line + b"\n" + GOOD.replace(b'"trial": 0', b'"trial": 2')
    (tmp_path / "scores.jsonl").write_bytes(data)
    with pytest.raises(ValueError) as info:
        ResultsStore(tmp_path)
    assert f"{tmp_path / 'scores.jsonl'}:2 is not a score record ({message}" in str(info.value)
    assert "delete that line (its trial is scored again)" in str(info.value)
    assert (tmp_path / "scores.jsonl").read_bytes() == data  # nothing lost
    assert not (tmp_path / "lock").exists()  # a refused start releases the directory


def test_two_different_records_of_one_trial_are_refused_and_a_repeated_line_is_not(tmp_path):
    other = GOOD.replace(b'"score": 1.0', b'"score": 2.0')
    (tmp_path / "scores.jsonl").write_bytes(GOOD + GOOD + GOOD.replace(b'"trial": 0', b'"trial": 1'))
    with ResultsStore(tmp_path) as store:  # a line written twice (a crash between write and flush): one record
        assert sorted(store.records) == [0, 1]
    (tmp_path / "scores.jsonl").write_bytes(GOOD + GOOD.replace(b'"trial": 0', b'"trial": 1') + other)
    with pytest.raises(ValueError, match=r"scores.jsonl:3 is a second, different record of trial 0 \(the first is "
                                         r"on line 1\): which one holds the trial's result is unknown"):
        ResultsStore(tmp_path)
    assert not (tmp_path / "lock").exists()


def test_summary_json_is_written_with_null_for_non_finite_numbers(tmp_path):
    with ResultsStore(tmp_path) as store:
        store.write_summary({"test_accuracy": math.nan, "test_metrics": {"test_loss": math.inf, "test_acc": 0.5}})
    assert json.loads((tmp_path / "summary.json").read_text()) == {
        "test_accuracy": None, "test_metrics": {"test_loss": None, "test_acc": 0.5}}


@pytest.mark.parametrize("option, value", [
    ("budget", -1), ("budget", 0), ("budget", "ten"), ("budget", True), ("budget", 2.5),
    ("seed", -1), ("seed", 2**64), ("seed", "ten"), ("seed", True), ("seed", 2.5),
    ("batch_size", 0), ("batch_size", 1), ("num_classes", 0), ("num_classes", "4"),
])
def test_budgets_seeds_and_sizes_are_checked_with_the_accepted_range(option, value):
    accepted = {"budget": "an int >= 1, or None", "seed": "an int in 0..4294967295",
                "batch_size": "an int >= 2, or None", "num_classes": "an int >= 1, or None"}[option]
    for strategy in ("exhaustive", "random"):
        with pytest.raises(ValueError) as info:
            ArchitectureSearch(search_strategy=strategy, progress=False, **{option: value})
        assert str(info.value).startswith(f"{option} (--search.{option}) must be {accepted}")
        assert str(info.value).endswith(f"got {value!r}")
    with pytest.raises(ValueError, match=r"sample_size \(search_strategy.init_args.sample_size\) must be an int in "
                                         r"1..4; got 5"):
        RegularizedEvolution(population=4, sample_size=5)


def test_numpy_integers_are_accepted_as_ints():
    import numpy as np

    s = ArchitectureSearch(budget=np.int64(3), seed=np.int32(2), batch_size=np.int64(8), progress=False)
    assert s.config()["budget"] == 3 and type(s.config()["seed"]) is int
    json.dumps(s.config())  # JSON-ready


def test_an_empty_or_tilde_results_dir(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="results_dir .* must be a directory path, got an empty string"):
        search(results_dir="")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert search(results_dir="~/x").results_dir == str(tmp_path / "x")


def test_force_with_a_larger_budget_continues_an_evolution_as_an_uninterrupted_run(tiny_data, tmp_path):
    evolution = RegularizedEvolution(population=4, sample_size=2)  # one instance: the dry replay must not spoil it
    search(results_dir=str(tmp_path), search_strategy=evolution, budget=6).run(tiny_data)
    resumed = search(results_dir=str(tmp_path), search_strategy=evolution, budget=9, force=True)
    calls = []
    original = resumed.score_candidate
    resumed.score_candidate = lambda *a, **k: calls.append(a[1]) or original(*a, **k)
    result = resumed.run(tiny_data)
    assert calls == [6, 7, 8] and not (tmp_path / "previous").exists()
    whole = search(search_strategy=RegularizedEvolution(population=4, sample_size=2), budget=9).run(tiny_data)
    pairs = lambda rs: [(r["candidate"], r["score"]) for r in rs]  # noqa: E731
    assert pairs(result.records) == pairs(whole.records)


# ---------------------------------------------------------------------------------------------
# Progress where stderr is not a terminal, and the search in the user's Lightning loggers


def test_progress_is_plain_periodic_lines_when_the_stream_is_not_a_terminal():
    import io

    from lightning_epe.search.progress import PlainProgress, search_progress

    stream = io.StringIO()
    times = iter([0.0, 1.0, 2.0, 5.0, 11.5, 12.0, 13.0])  # start, then one per candidate
    progress = PlainProgress(total=6, done=0, stream=stream, interval=10.0, clock=lambda: next(times))
    for best in ("1.00 (a)", "2.00 (b)", "2.00 (b)", "3.00 (c)", "3.00 (c)", "3.00 (c)"):
        progress.update(best)
    lines = stream.getvalue().splitlines()
    # after the first candidate, then once 10 s have passed, then the last one
    assert [line.split(",")[0] for line in lines] == ["scoring: 1/6 candidates (16%)", "scoring: 4/6 candidates (66%)",
                                                       "scoring: 6/6 candidates (100%)"]
    assert lines[1] == "scoring: 4/6 candidates (66%), 0.35 cand/s, elapsed 0:00:12, ETA 0:00:06, best 3.00 (c)"
    assert lines[2].endswith("ETA 0:00:00, best 3.00 (c)")
    # through search_progress with a non-terminal stream: plain lines, no escape codes or carriage returns
    stream = io.StringIO()
    with search_progress(3, 1, stream=stream, interval=0.0, draws=2) as update:
        update("5.00 (x)")
        update("6.00 (y)")
    text = stream.getvalue()
    assert text.splitlines() == [line for line in text.splitlines() if line.startswith("scoring x2 draws: ")]
    assert "resuming, 1/3 candidates already scored" in text and "3/3 candidates (100%)" in text
    assert "\x1b" not in text and "\r" not in text


def test_a_search_shows_plain_progress_on_a_captured_stderr(tiny_data, capsys):
    search(progress=True).run(tiny_data)
    err = capsys.readouterr().err
    assert "scoring: 6/6 candidates (100%)" in err and "\x1b[" not in err


def _csv_rows(path):
    import csv

    with open(path) as f:
        return list(csv.DictReader(f))


def _nan_or_float(text):
    return float("nan") if text in ("", "nan") else float(text)


def test_the_search_logs_each_candidate_and_the_leaderboard_to_a_csv_logger(tiny_data, tmp_path):
    import math
    from pathlib import Path

    import yaml
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path / "logs", name="search")
    result = search(logger=logger, budget=8).run(tiny_data)
    rows = _csv_rows(Path(logger.log_dir) / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [r["trial"] for r in result.records]
    best = -math.inf
    for row, record in zip(rows, result.records):
        score = _nan_or_float(row["search/score"])
        assert (math.isnan(score) and record["score"] is None) or score == record["score"]
        assert float(row["search/seconds"]) == record["seconds"]
        best = max(best, record["score"]) if record["score"] is not None else best
        assert float(row["search/best_score"]) == best  # the running best
    board = _csv_rows(Path(logger.log_dir) / "leaderboard.csv")
    scored = sorted((r for r in result.records if r["score"] is not None), key=lambda r: (-r["score"], r["trial"]))
    assert [int(r["trial"]) for r in board] == [r["trial"] for r in scored]
    assert [int(r["rank"]) for r in board] == list(range(1, len(scored) + 1))
    assert board[0]["arch"] == result.best["arch"] and float(board[0]["score"]) == result.best["score"]
    hparams = yaml.safe_load((Path(logger.log_dir) / "hparams.yaml").read_text())
    assert hparams["search"]["budget"] == 8 and hparams["search"]["score"] == "epe"


def test_a_resumed_search_logs_the_whole_search_to_a_new_logger_version(tiny_data, tmp_path):
    from pathlib import Path

    from lightning.pytorch.loggers import CSVLogger

    search(budget=3, results_dir=str(tmp_path / "r")).run(tiny_data)
    logger = CSVLogger(tmp_path / "logs", name="search")
    result = search(budget=5, results_dir=str(tmp_path / "r"), force=True, logger=[logger]).run(tiny_data)
    assert [int(r["step"]) for r in _csv_rows(Path(logger.log_dir) / "metrics.csv")] == [0, 1, 2, 3, 4]
    assert len(result.records) == 5


class _FakeWriter:
    """What TensorBoardLogger calls on its SummaryWriter."""

    def __init__(self):
        self.scalars, self.texts, self.flushed = [], {}, 0

    def add_scalar(self, tag, value, global_step=None, **kwargs):
        self.scalars.append((tag, value, global_step))

    def add_text(self, tag, text, global_step=None, **kwargs):
        self.texts[tag] = text

    def flush(self):
        self.flushed += 1


def test_the_search_logs_to_a_tensorboard_logger_without_tensorboard_installed(tiny_data, tmp_path, monkeypatch):
    """The TensorBoard path with a stand-in SummaryWriter (the real one is tested below when installed)."""
    import lightning.fabric.loggers.tensorboard as fabric_tb
    from lightning.pytorch.loggers import TensorBoardLogger

    monkeypatch.setattr(fabric_tb, "_TENSORBOARD_AVAILABLE", True)
    writer = _FakeWriter()
    monkeypatch.setattr(TensorBoardLogger, "experiment", property(lambda self: writer))
    result = search(logger=TensorBoardLogger(tmp_path / "tb", name="search")).run(tiny_data)
    scores = [(step, value) for tag, value, step in writer.scalars if tag == "search/score"]
    assert [step for step, _ in scores] == [r["trial"] for r in result.records]
    assert [v for _, v in scores if v == v] == [r["score"] for r in result.records if r["score"] is not None]
    assert {tag for tag, _, _ in writer.scalars} == {"search/score", "search/seconds", "search/best_score"}
    board = writer.texts["search/leaderboard"].splitlines()
    assert board[0] == "| rank | trial | candidate | epe | seconds |"
    assert board[2].startswith(f"| 1 | {result.best['trial']} | {result.best['arch']} | {result.best['score']:.4f} |")
    assert '"budget": 6' in writer.texts["search/config"] and writer.flushed >= 1


def test_the_search_logs_to_a_real_tensorboard_logger(tiny_data, tmp_path):
    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("needs tensorboard, an optional extra (pip install 'lightning-epe[loggers]'); the TensorBoard "
                    "path is also tested with a stand-in writer above")
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path / "tb", name="search")
    result = search(logger=logger).run(tiny_data)
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("search/score")]
    assert steps == [r["trial"] for r in result.records]
    assert any(tag.startswith("search/leaderboard") for tag in events.Tags()["tensors"])  # add_text's summary


def test_a_logger_that_fails_does_not_stop_the_search(tiny_data):
    class Broken:
        def log_metrics(self, metrics, step=None):
            raise OSError("the logging server is gone")

    with pytest.warns(RuntimeWarning, match="stops logging to Broken, which failed: OSError: the logging server"):
        result = search(logger=Broken()).run(tiny_data)
    assert len(result.records) == 6
    with pytest.raises(TypeError, match="logger must be a Lightning logger"):
        search(logger="csv")


def test_the_leaderboard_goes_to_loggers_with_tables_as_wandb_and_mlflow_take_them(tiny_data):
    """Stand-ins with the methods WandbLogger (log_table) and MLFlowLogger (MlflowClient.log_table) have."""
    class Tabled:
        def __init__(self):
            self.metrics, self.tables = [], {}

        def log_metrics(self, metrics, step=None):
            self.metrics.append((step, metrics))

        def log_table(self, key, columns, data):
            self.tables[key] = (columns, data)

    class Client:
        def log_table(self, run_id, data, artifact_file):
            self.logged = (run_id, data, artifact_file)

    class MLFlowLogger(Tabled):
        run_id = "run-1"

        def __init__(self):
            super().__init__()
            self.experiment = Client()

    wandb_like, mlflow_like = Tabled(), MLFlowLogger()
    result = search(logger=[wandb_like, mlflow_like]).run(tiny_data)
    columns, data = wandb_like.tables["search/leaderboard"]
    assert columns == ["rank", "trial", "candidate", "arch", "score", "seconds"]
    assert data[0][:5] == [1, result.best["trial"], result.best["candidate"], result.best["arch"], result.best["score"]]
    run_id, table, artifact = mlflow_like.experiment.logged
    assert (run_id, artifact) == ("run-1", "search_leaderboard.json") and table["trial"][0] == result.best["trial"]
    assert [step for step, _ in mlflow_like.metrics] == list(range(6)) and not mlflow_like.tables


@pytest.mark.parametrize("options", [
    dict(score="epe", budget=12),
    dict(score="ensemble", budget=6, score_options={"members": ["epe", "synflow", "naswot"]}),
    dict(score="epe", budget=5, draws={"k": 3, "over": "both"}),
    dict(score="epe", budget=10, search_strategy=EVOLUTION_4_2, batch_policy="fresh"),
], ids=["epe", "ensemble", "draws_over_inits", "evolution"])
def test_the_fast_nb201_builder_gives_the_records_of_plain_builds(options, tiny_data, monkeypatch):
    """One network rewired per candidate (NB201Builder) vs every candidate built anew: the same records."""
    fast = search(build_options={"C": 4, "N": 1}, **options).run(tiny_data)
    monkeypatch.setattr(NB201Space, "builder", CandidateSpace.builder)
    plain = search(build_options={"C": 4, "N": 1}, **options).run(tiny_data)
    keys = ("trial", "candidate", "seed", "score", "scores", "draws", "error")
    assert [{k: r.get(k) for k in keys} for r in fast.records] == [{k: r.get(k) for k in keys} for r in plain.records]
    assert any(r["score"] is not None for r in fast.records)


def test_a_score_that_draws_random_numbers_repeats_whatever_ran_before(tiny_data, tmp_path):
    """AZ-NAS re-initialises the network and feeds noise drawn from torch's RNG: each candidate's score is computed
    under its own seed, so the global RNG state before the search and a resume change nothing (and it is restored)."""
    options = dict(score="ensemble", search_strategy="exhaustive", batch_size=32,
                   score_options={"members": ["az_expressivity", "az_trainability"]})
    torch.manual_seed(0)
    first = [r["scores"] for r in search(**options, budget=4).run(tiny_data).records]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    second = search(**options, budget=2, results_dir=str(tmp_path / "r")).run(tiny_data)
    assert torch.equal(torch.get_rng_state(), state)
    torch.rand(5)  # another history before the resume
    resumed = search(**options, budget=4, results_dir=str(tmp_path / "r"), force=True).run(tiny_data)
    assert [r["scores"] for r in second.records] == first[:2]
    assert [r["scores"] for r in resumed.records] == first


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_results_dir_that_is_a_dangling_link_or_a_loop_is_named(kind, tmp_path):
    link = tmp_path / "results"
    if kind == "dangling":
        link.symlink_to(tmp_path / "gone")
        message = rf"is a symbolic link to '{tmp_path / 'gone'}', which does not exist \(a dangling link\)"
    else:
        link.symlink_to(tmp_path / "other")
        (tmp_path / "other").symlink_to(link)
        message = "is a loop of symbolic links"
    with pytest.raises(OSError, match=rf"results directory '{link}' {message}.*--results_dir"):
        ResultsStore(link)
    assert not (tmp_path / "gone").exists()


def test_the_seed_follows_lightnings_global_seed(tiny_data, tmp_path, monkeypatch):
    import lightning as L

    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    assert ArchitectureSearch(progress=False).seed == 0  # no global seed: 0
    L.seed_everything(7, verbose=False)  # sets PL_GLOBAL_SEED (monkeypatch restores the environment)
    search = ArchitectureSearch(budget=2, build_options=TINY, accelerator="cpu", progress=False,
                                results_dir=str(tmp_path))
    assert search.seed == 7
    assert ArchitectureSearch(seed=3, progress=False).seed == 3  # an explicit seed wins
    records = search.run(tiny_data).records
    assert [r["candidate"] for r in records] == NB201Space().sample(2, seed=7)
    assert json.loads((tmp_path / "summary.json").read_text())["seed"] == 7
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 7
    monkeypatch.setenv("PL_GLOBAL_SEED", "x")
    with pytest.raises(ValueError, match="PL_GLOBAL_SEED='x' is not an int"):
        ArchitectureSearch(progress=False)


def test_a_failure_is_reported_when_it_happens_and_the_footer_counts_apart(tiny_data, capsys):
    ArchitectureSearch(FlakySpace(), budget=6, accelerator="cpu").run(tiny_data)
    captured = capsys.readouterr()
    failures = [line for line in captured.err.splitlines() if line.startswith("failed: ")]
    assert len(failures) == 2
    assert failures[0].startswith("failed: trial 2, candidate 2: ") and "cannot build candidate 2" in failures[0]
    assert "boom in forward" in failures[1]
    # reported as they fail: before the progress line of the last candidate
    assert captured.err.index("boom in forward") < captured.err.index("scoring: 6/6 candidates")
    assert "3 scored, 1 NaN, 2 failed" in captured.out
    ArchitectureSearch(FlakySpace(), budget=6, accelerator="cpu", progress=False).run(tiny_data)
    assert "failed: " not in capsys.readouterr().err  # progress=False: quiet


@pytest.mark.parametrize("width", [80, 100, 160])
def test_the_live_bar_keeps_count_rate_elapsed_and_eta_and_cuts_the_arch_first(width):
    import io
    import re
    import time

    from rich.console import Console

    from lightning_epe.search.loop import _best_text
    from lightning_epe.search.progress import _rich_progress

    best = _best_text({"score": 6231.0368, "arch": NB201Space().arch(12707)})
    out = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    with _rich_progress(out, 15625, 0, 4) as update:
        for _ in range(3):
            time.sleep(0.01)
            update(best)
    line = out.file.getvalue().split("\r\x1b[2K")[-1].split("\n")[0]
    assert len(line) <= width
    assert re.search(r" 12/62500 \d+\.\d\d cand/s +\d:\d\d:\d\d ETA \d:\d\d:\d\d best 6231\.04", line), line
    assert best in line or line.endswith("…")


@pytest.mark.parametrize("space, build", [
    ("nb101", {"stem_channels": 4, "stacks": 2, "cells_per_stack": 1}), ("darts", {"C": 2, "layers": 3}),
])
@pytest.mark.parametrize("options", [
    dict(score="ensemble", budget=3, score_options={"members": ["epe", "synflow", "meco"]}),
    dict(score="epe", budget=3, draws={"k": 2, "over": "both"}),
    dict(score="epe", budget=4, search_strategy=EVOLUTION_4_2),
], ids=["ensemble", "draws", "evolution"])
def test_searches_over_the_nb101_and_darts_spaces(space, build, options, tiny_data):
    """The held-out spaces in a search as it is: the ensemble, draws and evolution (their mutate) need no change."""
    from lightning_epe.spaces import DARTSSpace, NB101Space

    candidates = NB101Space() if space == "nb101" else DARTSSpace()
    result = ArchitectureSearch(space=candidates, seed=0, progress=False, build_options=build, **options).run(tiny_data)
    assert len(result.records) == options["budget"] and result.best is not None
    assert all(r["error"] is None for r in result.records)
    assert all(candidates.parse(r["candidate"]) == r["candidate"] for r in result.records)
