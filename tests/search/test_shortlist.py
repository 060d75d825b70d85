"""The shortlist stage: the top k scored candidates trained briefly, the best by a validation metric wins."""
import json
import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from torch import nn

from lightning_epe import ArchitectureSearch
from lightning_epe.data import DigitsDataModule
from lightning_epe.search import DirectoryLock, ResultsDirectoryBusy, Shortlist
from lightning_epe.search.shortlist import SHORTLIST, shortlisted

# Each candidate's network carries the validation value its short fit reports (known in advance: the test knows
# the winner), and whether its training fails.
QUALITY = {"a": 0.30, "b": 0.90, "c": 0.50, "d": 0.70, "e": 0.10}
QUICK = {"limit_train_batches": 1, "limit_val_batches": 1, "accelerator": "cpu"}


class Net(nn.Module):
    def __init__(self, name: str, width: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.name, self.quality = name, QUALITY[name]
        self.body = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.body(x)


def factory(name, width):
    return lambda num_classes=10, in_channels=3: Net(name, width, num_classes, in_channels)


SPACE = {name: factory(name, width) for name, width in zip(QUALITY, (2, 3, 4, 5, 6))}


class Reporting(L.LightningModule):
    """Trains the network for real and reports its known quality as ``val_acc``; ``fail``: its training raises."""

    trained: list[str] = []
    fail: set[str] = set()
    fail_from_steps: int | None = None  # every training with a budget of at least that many steps fails

    def __init__(self, net, lr: float = 0.01):
        super().__init__()
        self.net, self.lr = net, lr
        Reporting.trained.append(net.name)

    def training_step(self, batch, _):
        late = Reporting.fail_from_steps is not None and self.trainer.max_steps >= Reporting.fail_from_steps
        if self.net.name in Reporting.fail or late:
            raise RuntimeError(f"the training of {self.net.name} broke")
        return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def validation_step(self, batch, _):
        self.log("val_acc", self.net.quality)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@pytest.fixture(autouse=True)
def _fresh():
    Reporting.trained.clear()
    Reporting.fail.clear()
    Reporting.fail_from_steps = None


@pytest.fixture(scope="module")
def digits():
    return DigitsDataModule(batch_size=32)


def make(shortlist, results_dir=None, **kwargs):
    return ArchitectureSearch(space=SPACE, score="epe", batch_size=16, progress=False, results_dir=results_dir,
                              shortlist=shortlist, **kwargs)


def top(search, k):
    return [r["candidate"] for r in shortlisted(search.result.records, k)]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_settings_are_checked_with_what_is_accepted():
    assert Shortlist.of(None).k == 0 and Shortlist.of(3) == Shortlist(k=3)
    assert Shortlist.of({"k": 5, "steps": 20}).budget(2) == {"steps": 80}  # steps replace the default epochs
    assert Shortlist(k=2, epochs=3).budget(1) == {"epochs": 6}
    for bad, message in [({"k": -1}, "k must be an int >= 0"), ({"k": 2, "epochs": 0}, "epochs must be an int >= 1"),
                         ({"k": 2, "epochs": None}, "needs a budget"), ({"k": 2, "mode": "best"}, "mode must be one"),
                         ({"k": 2, "trainer": {"max_epochs": 3}}, "must not set max_epochs"),
                         ({"k": 2, "metric": ""}, "name of a logged metric"),
                         ({"k": 2, "top": 3}, "unknown shortlist")]:
        with pytest.raises(ValueError, match=message):
            Shortlist.of(bad)
    with pytest.raises(ValueError, match="shortlist"):
        ArchitectureSearch(space=SPACE, shortlist={"k": 2, "halving": "yes"})


def test_the_winner_is_the_best_by_the_metric_and_the_final_training_gets_it(digits):
    search = make({"k": 3, "trainer": QUICK})
    search.run(digits)
    shortlist = top(search, 3)
    assert max(shortlist, key=QUALITY.get) != search.result.best["candidate"]  # (else this test could not tell)
    assert search.select(digits, module=Reporting) == max(shortlist, key=QUALITY.get)
    assert sorted(Reporting.trained) == sorted(shortlist)  # each shortlisted candidate trained once
    result = search.shortlist_result
    assert result["winner"]["value"] == pytest.approx(max(QUALITY[c] for c in shortlist))
    assert [r["candidate"] for r in result["rounds"][0]] == shortlist  # in the order of their scores
    # mode=min (a loss): the lowest value wins
    low = make({"k": 3, "mode": "min", "trainer": QUICK})
    low.result = search.result
    assert low.select(digits, module=Reporting) == min(shortlist, key=QUALITY.get)
    # fit() trains the shortlist's winner, not the training-free pick
    Reporting.trained.clear()
    search.fit(L.Trainer(max_epochs=1, **QUICK, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False), digits, module=Reporting)
    assert Reporting.trained[-1] == max(shortlist, key=QUALITY.get)


def test_a_failed_short_fit_is_recorded_and_the_stage_goes_on(digits, tmp_path):
    search = make({"k": 5, "trainer": QUICK}, results_dir=tmp_path)
    Reporting.fail.add("b")  # the best by the metric: it cannot win when its training fails
    assert search.select(digits, module=Reporting) == "d"
    records = {r["candidate"]: r for r in lines(tmp_path / SHORTLIST)}
    assert len(records) == 5 and "the training of b broke" in records["b"]["error"] and records["b"]["value"] is None
    assert all(r["error"] is None for name, r in records.items() if name != "b")
    # every short fit failing: the training-free pick goes on, with a warning
    Reporting.fail.update(QUALITY)
    again = make({"k": 2, "trainer": QUICK})
    with pytest.warns(RuntimeWarning, match="every short fit failed"):
        assert again.select(digits, module=Reporting) == again.result.best["candidate"]


def test_k_edge_values(digits, tmp_path):
    for k in (0, 1):  # off, and one candidate: nothing to compare, the training-free pick untrained
        search = make({"k": k, "trainer": QUICK}, results_dir=tmp_path / str(k))
        assert search.select(digits, module=Reporting) == search.result.best["candidate"]
        assert search.shortlist_result is None and Reporting.trained == []
        assert not (tmp_path / str(k) / SHORTLIST).exists()
    search = make({"k": 9, "trainer": QUICK})  # more than the 5 scored: all of them, with a note
    notes = []
    assert search.select(digits, module=Reporting, report=notes.append) == "b"
    assert sorted(Reporting.trained) == sorted(QUALITY)
    assert "shortlist.k=9 but the search scored 5 distinct candidate(s)" in notes[0]
    assert search.shortlist_result["notes"][0] == notes[0]


def test_a_killed_stage_resumes_training_only_the_missing_fits(digits, tmp_path):
    search = make({"k": 4, "trainer": QUICK}, results_dir=tmp_path)
    winner = search.select(digits, module=Reporting)
    path = tmp_path / SHORTLIST
    whole = path.read_bytes()
    first_two = b"".join(whole.splitlines(keepends=True)[:2])
    path.write_bytes(first_two + whole.splitlines(keepends=True)[2][:25])  # killed while appending the third
    Reporting.trained.clear()
    resumed = make({"k": 4, "trainer": QUICK}, results_dir=tmp_path)
    assert resumed.select(digits, module=Reporting) == winner
    assert Reporting.trained == top(resumed, 4)[2:]  # only the two missing ones
    before = [json.loads(line) for line in whole.decode().splitlines()]
    assert [(r["candidate"], r["value"]) for r in lines(path)] == [(r["candidate"], r["value"]) for r in before]
    Reporting.trained.clear()  # everything there: nothing trained
    assert make({"k": 4, "trainer": QUICK}, results_dir=tmp_path).select(digits, module=Reporting) == winner
    assert Reporting.trained == []
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["shortlist"]["winner"]["candidate"] == winner


def test_a_changed_shortlist_configuration_does_not_reuse_the_short_fits(digits, tmp_path):
    make({"k": 2, "trainer": QUICK}, results_dir=tmp_path).select(digits, module=Reporting)
    old = (tmp_path / SHORTLIST).read_text()
    changed = {"k": 2, "epochs": 2, "trainer": QUICK}
    for options in ({}, {"lr": 0.02}):  # another budget; then the same one with other module options
        Reporting.trained.clear()
        make(changed, results_dir=tmp_path).select(digits, module=Reporting, **options)
        assert len(Reporting.trained) == 2
    assert (tmp_path / "previous" / "1" / SHORTLIST).read_text() == old  # moved aside, not deleted
    assert (tmp_path / "previous" / "2" / SHORTLIST).exists()
    assert {r["budget"]["epochs"] for r in lines(tmp_path / SHORTLIST)} == {2}


def test_successive_halving_doubles_the_budget_for_the_better_half(digits, tmp_path):
    search = make({"k": 5, "halving": True, "steps": 1, "trainer": {"limit_val_batches": 1, "accelerator": "cpu"}},
                  results_dir=tmp_path)
    assert search.select(digits, module=Reporting) == "b"
    rounds = [[r["candidate"] for r in results] for results in search.shortlist_result["rounds"]]
    assert rounds == [top(search, 5), ["b", "d", "c"], ["b", "d"]]  # 5 -> the better 3 -> the better 2
    budgets = {(r["round"], r["budget"]["steps"]) for r in lines(tmp_path / SHORTLIST)}
    assert budgets == {(0, 1), (1, 2), (2, 4)}


def test_one_writer_a_held_directory_is_refused(digits, tmp_path):
    search = make({"k": 2, "trainer": QUICK}, results_dir=tmp_path)
    search.run(digits)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from lightning_epe.search import DirectoryLock
        with DirectoryLock({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ResultsDirectoryBusy, match=f"pid {holder.pid}"):
            search.select(digits, module=Reporting)
    finally:
        holder.kill()
        holder.wait()
    assert Reporting.trained == [] and not (tmp_path / SHORTLIST).exists()
    with DirectoryLock(tmp_path):  # a holder in this process too
        with pytest.raises(ResultsDirectoryBusy):
            search.select(digits, module=Reporting)
    assert search.select(digits, module=Reporting) == max(top(search, 2), key=QUALITY.get)  # free again


def test_a_halving_round_that_fails_whole_leaves_the_previous_rounds_best(digits):
    Reporting.fail_from_steps = 2  # round 1 (2 steps) fails for every candidate
    search = make({"k": 5, "halving": True, "steps": 1, "trainer": {"limit_val_batches": 1, "accelerator": "cpu"}})
    assert search.select(digits, module=Reporting) == "b"  # round 0's best
    rounds = search.shortlist_result["rounds"]
    assert len(rounds) == 2 and all(r["error"] for r in rounds[1])
    assert search.shortlist_result["winner"]["value"] == pytest.approx(0.9)
