"""The built-in recipes ship in the package: named from any directory, listed by `lightning-epe recipes`."""
import json
import os
from pathlib import Path

import pytest
import yaml

from lightning_epe.cli import main
from lightning_epe.recipes import FOLDER, list_recipes, recipe_path

ROOT = Path(__file__).resolve().parents[2]
FAST = ["--search.budget", "2", "--search.build_options", '{"C": 2, "N": 1}', "--search.batch_size", "16",
        "--search.progress", "false"]


def test_the_repository_recipes_folder_is_the_package_one():
    assert (ROOT / "recipes").resolve() == FOLDER
    assert sorted(list_recipes()) == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
    assert "quickstart" in list_recipes()


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_recipe_has_a_one_line_summary(name):
    summary = list_recipes()[name]
    assert summary and len(summary) <= 116, summary
    assert isinstance(yaml.safe_load((FOLDER / f"{name}.yaml").read_text()), dict)


def test_recipe_path_takes_a_file_or_a_name(tmp_path):
    assert recipe_path("quickstart") == str(FOLDER / "quickstart.yaml")
    assert recipe_path("quickstart.yaml") == str(FOLDER / "quickstart.yaml")
    own = tmp_path / "quickstart.yaml"  # a file of that name wins over the built-in recipe
    own.write_text("seed_everything: 1\n")
    assert recipe_path(str(own)) == str(own)
    with pytest.raises(ValueError, match=r"no such file, nor a built-in recipe; built-in recipes: .*quickstart"):
        recipe_path("quickstrat")
    with pytest.raises(ValueError, match="no such file"):
        recipe_path("elsewhere/quickstart.yaml")  # a path is not looked up by name


def test_recipes_command_lists_one_line_each(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name, summary in list_recipes().items():
        assert sum(line.split()[:1] == [name] and line.endswith(summary) for line in lines) == 1
    assert main(["recipes", "--all"]) == 2


def test_a_recipe_by_name_runs_from_another_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["score", "--config", "quickstart", *FAST]) == 0  # results_dir: the recipe's, under the cwd
    records = (tmp_path / "results" / "quickstart" / "scores.jsonl").read_text().splitlines()
    assert [json.loads(line)["trial"] for line in records] == [0, 1]
    assert main(["score", "--config=quickstart", "--results_dir", "b", *FAST]) == 0
    assert os.path.exists(tmp_path / "b" / "summary.json")
    capsys.readouterr()
    assert main(["score", "--config", "recipes/quickstart.yaml", *FAST]) == 2  # no such path here
    assert "built-in recipes: " in capsys.readouterr().err


def test_the_shortlist_recipe_runs_offline_with_small_overrides(tmp_path, capsys):
    """nb201_cifar10_shortlist on the shared CIFAR-10 sample: scored, its top 5 trained briefly, the best by
    val_acc trained and tested; a rerun trains nothing again; `fit` defaults to the shortlist's winner."""
    sample = ROOT.parent / "shared" / "data" / "cifar10" / "cifar10_sample.npz"
    if not sample.exists():
        pytest.skip(f"needs the shared data file {sample} (absent on this machine)")
    data = {"class_path": "lightning_epe.data.NPZDataModule",
            "init_args": {"path": str(sample), "batch_size": 32, "val_fraction": 0.2, "test_fraction": 0.2}}
    small = ["--data", json.dumps(data), "--results_dir", str(tmp_path), "--search.budget", "8",
             "--search.build_options", '{"C": 2, "N": 1}', "--search.batch_size", "16", "--search.progress", "false",
             "--search.accelerator", "cpu", "--search.shortlist.epochs", "1",
             "--search.shortlist.trainer", '{"limit_train_batches": 2, "limit_val_batches": 2}',
             "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_test_batches", "2",
             "--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
             "--data.init_args.num_workers", "0"]
    assert main(["search", "--config", "nb201_cifar10_shortlist", *small]) == 0
    out = capsys.readouterr().out
    fits = [json.loads(line) for line in (tmp_path / "shortlist.jsonl").read_text().splitlines()]
    scores = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    distinct = {r["candidate"] for r in scores if r["score"] is not None}
    assert len(fits) == min(5, len(distinct)) and all(r["error"] is None and r["budget"] == {"epochs": 1}
                                                      for r in fits)
    summary = json.loads((tmp_path / "summary.json").read_text())
    winner = max(fits, key=lambda r: r["value"])  # (ties: the better score, listed first)
    assert summary["shortlist"]["winner"]["candidate"] == winner["candidate"] == summary["trained"]
    assert "shortlist winner" in out and 0.0 <= summary["test_accuracy"] <= 1.0
    assert main(["search", "--config", "nb201_cifar10_shortlist", *small]) == 0  # resumed: nothing trained again
    assert "short fit" not in capsys.readouterr().out
    assert len((tmp_path / "shortlist.jsonl").read_text().splitlines()) == len(fits)
    assert main(["fit", "--config", "nb201_cifar10_shortlist", *small]) == 0  # fit: the directory's pick
    assert f"training the best of {tmp_path}/: {winner['arch']}" in capsys.readouterr().out
    assert main(["score", "--config", "nb201_cifar10_shortlist", *small]) == 0  # score trains nothing: a note
    assert "the shortlist stage (k=5) trains, so it runs with `search`" in capsys.readouterr().out
    assert len((tmp_path / "shortlist.jsonl").read_text().splitlines()) == len(fits)
