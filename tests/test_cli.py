import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_epe.cli import main
from lightning_epe.scores import DEFAULT_MEMBERS

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
FAST = ["--search.budget", "3", "--search.build_options", '{"C": 2, "N": 1}', "--search.batch_size", "16",
        "--search.progress", "false"]
FAST_TRAIN = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
              "--trainer.limit_test_batches", "2", "--trainer.enable_progress_bar", "false"]


def test_help_and_version(capsys):
    assert main([]) == 0
    assert "search" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert "lightning-epe" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_parses(recipe, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--config", str(recipe), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["search"]["score"] == ("ensemble" if "ensemble" in recipe.stem else "epe")
    assert printed["data"]["class_path"].startswith("lightning_epe.data.")


def test_quickstart_search_end_to_end_and_resume(tmp_path, capsys):
    args = ["search", "--config", str(ROOT / "recipes/quickstart.yaml"), "--results_dir", str(tmp_path), *FAST,
            *FAST_TRAIN]
    assert main(args) == 0
    records = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["trial"] for r in records] == [0, 1, 2]
    assert set(records[0]) >= {"candidate", "score", "seconds", "error"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["best"]["score"] == max(r["score"] for r in records if r["score"] is not None)
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "config.json").exists()
    assert "test accuracy" in capsys.readouterr().out
    # the same command again resumes: nothing is scored twice
    assert main(["score", *args[1:args.index("--trainer.max_epochs")]]) == 0
    assert len((tmp_path / "scores.jsonl").read_text().splitlines()) == 3
    # a changed configuration is refused with a clear message and a non-zero exit
    assert main(["score", "--config", str(ROOT / "recipes/quickstart.yaml"), "--results_dir", str(tmp_path),
                 *FAST[:-1], "false", "--search.seed", "5"]) == 1
    assert "different configuration" in capsys.readouterr().err


def test_fit_one_candidate(capsys):
    assert main(["fit", "--config", str(ROOT / "recipes/quickstart.yaml"), "--candidate", "9930",
                 "--search.build_options", '{"C": 2, "N": 1}', *FAST_TRAIN]) == 0
    assert "test accuracy of |nor_conv_3x3~0|" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--search.budgett", "3"], "budgett"),
    (["--search.budget", "many"], "budget"),
    (["--search.search_strategy", "annealing"], "annealing"),
])
def test_bad_config_is_a_clear_error(args, message, capsys):
    code = main(["score", "--config", str(ROOT / "recipes/quickstart.yaml"), *args])
    assert code != 0
    assert message in capsys.readouterr().err


def test_installed_console_script_runs():
    script = shutil.which("lightning-epe", path=str(Path(sys.executable).parent))
    assert script is not None, "the lightning-epe entry point is not installed beside this Python"
    out = subprocess.run([script, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("lightning-epe ")
    out = subprocess.run([script, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and all(command in out.stdout for command in ("search", "score", "fit", "benchmark"))


@pytest.mark.parametrize("recipe, data", [
    ("nb201_cifar10", "cifar_dir"), ("nb201_cifar100", "cifar_dir"), ("nb201_imagenet16_120", "imagenet16_dir"),
])
def test_paper_recipes_run_with_small_overrides(recipe, data, request, tmp_path):
    data_dir = request.getfixturevalue(data)
    code = main(["search", "--config", str(ROOT / f"recipes/{recipe}.yaml"), "--results_dir", str(tmp_path),
                 "--data.init_args.data_dir", str(data_dir), "--data.init_args.num_workers", "0",
                 "--data.init_args.batch_size", "16", *FAST, *FAST_TRAIN])
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scored"] + summary["nan"] == 3 and 0.0 <= summary["test_accuracy"] <= 1.0
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config["search"]["batch_policy"] == "fresh" and config["search"]["search_strategy"] == "random"


def test_ensemble_recipe_runs_with_small_overrides(cifar_dir, tmp_path):
    code = main(["search", "--config", str(ROOT / "recipes/nb201_cifar10_ensemble.yaml"), "--results_dir",
                 str(tmp_path), "--data.init_args.data_dir", str(cifar_dir), "--data.init_args.num_workers", "0",
                 "--data.init_args.batch_size", "16", *FAST, *FAST_TRAIN])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    options = yaml.safe_load((ROOT / "recipes/nb201_cifar10_ensemble.yaml").read_text())["search"]["score_options"]
    members = set(options.get("members", DEFAULT_MEMBERS))  # the recipe uses the default ensemble
    assert all(set(r["scores"]) == members for r in records)  # every member of every candidate
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scored"] == 3 and 0.0 <= summary["test_accuracy"] <= 1.0


def test_timm_recipe_runs_with_small_overrides(cifar_dir, tmp_path):
    code = main(["search", "--config", str(ROOT / "recipes/timm_cifar10.yaml"), "--results_dir", str(tmp_path),
                 "--data.init_args.data_dir", str(cifar_dir), "--data.init_args.num_workers", "0",
                 "--data.init_args.batch_size", "8", "--search.budget", "2", "--search.batch_size", "16",
                 "--search.progress", "false", *FAST_TRAIN])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["candidate"] for r in records] == ["resnet18", "resnet10t"]
    assert json.loads((tmp_path / "summary.json").read_text())["trained"] in ("resnet18", "resnet10t")


def test_benchmark_command_on_a_search_results_file(tmp_path, capsys):
    from tests.conftest import NB201_CSV, require

    truth = require(NB201_CSV)
    results = tmp_path / "search"
    assert main(["score", "--config", str(ROOT / "recipes/quickstart.yaml"), "--results_dir", str(results),
                 *FAST]) == 0
    out = tmp_path / "bench"
    assert main(["benchmark", "--scores", str(results / "scores.jsonl"), "--ground_truth", str(truth),
                 "--out_dir", str(out), "--runs", "20", "--ns", "[2, 3]", "--plots", "false"]) == 0
    rows = list(csv.DictReader(open(out / "correlations.csv")))
    assert {r["truth"] for r in rows} >= {"cifar10_valid_acc"} and all(r["n"] == "3" for r in rows)
    assert main(["benchmark", "--scores", str(tmp_path / "missing.csv"), "--ground_truth", str(truth),
                 "--out_dir", str(out)]) != 0
    assert "missing.csv" in capsys.readouterr().err


def test_a_recipe_with_the_keys_of_0_1_runs_and_names_the_new_keys(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes/quickstart.yaml").read_text())
    recipe["search"]["strategy"] = recipe["search"].pop("search_strategy")  # 0.1: strategy: random
    (tmp_path / "old.yaml").write_text(yaml.safe_dump(recipe))
    script = shutil.which("lightning-epe", path=str(Path(sys.executable).parent))
    done = subprocess.run([script, "score", "--config", str(tmp_path / "old.yaml"), "--results_dir",
                           str(tmp_path / "out"), *FAST], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "search_strategy='random' (YAML: search.search_strategy)" in done.stderr  # shown to the user
    assert len((tmp_path / "out" / "scores.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("args, code, message", [
    (["--search.budget", "ten"], 2, "accepted for --search.budget: an int >= 1, or null"),
    (["--search.budget", "2.5"], 2, "accepted for --search.budget: an int >= 1, or null"),
    (["--search.budget", "true"], 2, "accepted for --search.budget: an int >= 1, or null"),
    (["--search.budget", "-1"], 1, "budget (--search.budget) must be an int >= 1"),
    (["--search.budget", "0"], 1, "budget (--search.budget) must be an int >= 1"),
    (["--search.seed", "-1"], 1, "seed (--search.seed) must be an int in 0..4294967295; got -1"),
    (["--search.seed", str(2**64)], 1, "seed (--search.seed) must be an int in 0..4294967295"),
    (["--search.seed", "ten"], 2, "accepted for --search.seed: an int in 0..4294967295"),
    (["--seed_everything", "-1"], 1, "seed_everything (--seed_everything) must be an int in 0..4294967295"),
], ids=["budget_ten", "budget_2.5", "budget_true", "budget_-1", "budget_0", "seed_-1", "seed_2**64", "seed_ten",
        "seed_everything_-1"])
def test_budgets_and_seeds_name_the_option_and_the_accepted_range(args, code, message, capsys, tmp_path):
    got = main(["score", "--config", str(ROOT / "recipes/quickstart.yaml"), "--results_dir", str(tmp_path),
                *FAST, *args])
    err = capsys.readouterr().err
    assert got == code and message in err, err
    assert not (tmp_path / "scores.jsonl").exists()


def test_output_selection_in_a_recipe(capsys):
    for value, expected in (("0", 0), ("logits", "logits")):
        with pytest.raises(SystemExit):
            main(["score", "--config", str(ROOT / "recipes/quickstart.yaml"), "--search.output", value,
                  "--print_config"])
        assert yaml.safe_load(capsys.readouterr().out)["search"]["output"] == expected


def first_element(output):
    """An ``output=`` function for the test below (YAML names it by its dotted path)."""
    return output[0]


def test_output_selection_by_a_functions_dotted_path(tmp_path):
    from lightning_epe.search import ArchitectureSearch

    search = ArchitectureSearch(output="tests.test_cli.first_element", progress=False)
    assert search.output is first_element and search.config()["output"] == "tests.test_cli.first_element"


# ---------------------------------------------------------------------------------------------
# The main job resumes as a whole; fit takes the best; loggers; the --print_config rule


def count_trainings(monkeypatch) -> list:
    import lightning_epe.module

    calls = []
    original = lightning_epe.module.fit_and_test

    def counting(*args, **kwargs):
        calls.append(args[2])  # the candidate
        return original(*args, **kwargs)

    monkeypatch.setattr(lightning_epe.module, "fit_and_test", counting)
    return calls


def test_the_main_job_resumes_as_a_whole_and_refit_trains_again(tmp_path, capsys, monkeypatch):
    trainings = count_trainings(monkeypatch)
    args = ["search", "--config", str(ROOT / "recipes/quickstart.yaml"), "--results_dir", str(tmp_path), *FAST,
            *FAST_TRAIN]
    assert main(args) == 0 and len(trainings) == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    accuracy = summary["test_accuracy"]
    assert summary["fit"]["torch_threads"] == summary["torch_threads"] == torch_threads()
    assert summary["fit"]["deterministic"] is True and len(summary["fit"]["config_id"]) == 16
    capsys.readouterr()
    assert main(args) == 0 and len(trainings) == 1  # the same command again: nothing scored, nothing trained
    out = capsys.readouterr().out
    assert f"test accuracy of the best candidate: {accuracy:.4f} (trained before with this configuration" in out
    assert "--refit trains it again" in out
    assert main([*args, "--trainer.enable_progress_bar", "true"]) == 0 and len(trainings) == 1  # display only
    assert main([*args, "--refit"]) == 0 and len(trainings) == 2  # asked to train again
    assert main([*args, "--trainer.max_epochs", "2"]) == 0 and len(trainings) == 3  # another training: trains
    assert main([*args, "--trainer.max_epochs", "2"]) == 0 and len(trainings) == 3  # ... once
    assert "refit: false" in (tmp_path / "config.yaml").read_text()  # a one-off request, not part of the recipe


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def test_fit_without_a_candidate_trains_the_best_of_the_results_directory(tmp_path, capsys, monkeypatch):
    trainings = count_trainings(monkeypatch)
    recipe = ["--config", str(ROOT / "recipes/quickstart.yaml"), "--results_dir", str(tmp_path)]
    assert main(["fit", *recipe, *FAST, *FAST_TRAIN]) == 1  # nothing searched there yet
    err = capsys.readouterr().err
    assert "fit trains --candidate" in err and "holds no finished search" in err and not trainings
    assert main(["score", *recipe, *FAST]) == 0
    best = json.loads((tmp_path / "summary.json").read_text())["best"]
    capsys.readouterr()
    assert main(["fit", *recipe, *FAST, *FAST_TRAIN]) == 0
    assert trainings == [best["candidate"]]
    assert f"training the best of {tmp_path}/: {best['arch']}" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trained"] == best["candidate"] and 0 <= summary["test_accuracy"] <= 1
    # the search command then finds the best trained with the same configuration: it does not train again
    assert main(["search", *recipe, *FAST, *FAST_TRAIN]) == 0 and len(trainings) == 1
    assert main(["fit", "--config", str(ROOT / "recipes/quickstart.yaml"), *FAST, *FAST_TRAIN,
                 "--results_dir", str(tmp_path / "nothing")]) == 1
    assert "holds no finished search" in capsys.readouterr().err


def test_the_search_in_a_csv_logger_from_yaml_and_one_logger_for_the_whole_job(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes/quickstart.yaml").read_text())
    recipe["search"]["logger"] = {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                  "init_args": {"save_dir": str(tmp_path / "logs"), "name": "search"}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["score", "--config", str(tmp_path / "r.yaml"), "--results_dir", str(tmp_path / "a"), *FAST]) == 0
    rows = list(csv.DictReader(open(tmp_path / "logs" / "search" / "version_0" / "metrics.csv")))
    records = [json.loads(line) for line in (tmp_path / "a" / "scores.jsonl").read_text().splitlines()]
    assert [float(r["search/score"]) for r in rows] == [r["score"] for r in records]
    assert (tmp_path / "logs" / "search" / "version_0" / "leaderboard.csv").exists()
    # a top-level logger: the search and the training log to the same run directory
    assert main(["search", "--config", str(ROOT / "recipes/quickstart.yaml"), "--results_dir", str(tmp_path / "b"),
                 *FAST, *FAST_TRAIN, "--logger", "CSVLogger", "--logger.save_dir", str(tmp_path / "job")]) == 0
    run = tmp_path / "job" / "lightning_logs" / "version_0"
    columns = set(next(csv.reader(open(run / "metrics.csv"))))
    assert {"search/score", "search/seconds", "search/best_score", "test_acc"} <= columns
    assert (run / "leaderboard.csv").exists()


def test_options_after_config_override_it_and_print_config_shows_the_effective_values(capsys):
    recipe = str(ROOT / "recipes/quickstart.yaml")
    for args, budget in ((["--config", recipe, "--search.budget", "7", "--print_config"], 7),
                         (["--search.budget", "7", "--config", recipe, "--print_config"], 30)):  # the recipe wins
        with pytest.raises(SystemExit):
            main(["search", *args])
        assert yaml.safe_load(capsys.readouterr().out)["search"]["budget"] == budget


def test_the_timm_recipe_ships_num_workers_a_two_core_machine_has():
    """torch warns when a DataLoader has more workers than the machine has cores (the README targets 2)."""
    recipe = yaml.safe_load((ROOT / "recipes/timm_cifar10.yaml").read_text())
    assert recipe["data"]["init_args"]["num_workers"] <= 2
    assert recipe["trainer"]["deterministic"] in (True, "warn")


@pytest.mark.parametrize("given, expected", [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_command_waits_passively_unless_the_user_chose(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    code = ("import os, sys\n"
            "from lightning_epe import cli\n"
            "cli.use_passive_openmp_waiting()\n"
            "assert 'torch' not in sys.modules  # the policy is read when torch loads OpenMP\n"
            "print(os.environ['OMP_WAIT_POLICY'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected
    assert "OMP_WAIT_POLICY" in subprocess.run([sys.executable, "-m", "lightning_epe.cli", "--help"],
                                               capture_output=True, text=True).stdout


@pytest.mark.parametrize("recipe, build", [
    ("nb101_cifar10", {"stem_channels": 4, "stacks": 2, "cells_per_stack": 1}),
    ("darts_cifar10", {"C": 2, "layers": 3}),
])
def test_held_out_space_recipes_run_search_then_training_with_small_overrides(recipe, build, cifar_dir, tmp_path):
    code = main(["search", "--config", str(ROOT / f"recipes/{recipe}.yaml"), "--results_dir", str(tmp_path),
                 "--data.init_args.data_dir", str(cifar_dir), "--data.init_args.num_workers", "0",
                 "--data.init_args.batch_size", "16", "--search.budget", "3", "--search.build_options",
                 json.dumps(build), "--search.batch_size", "16", "--search.progress", "false", *FAST_TRAIN])
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert len(records) == 3 and len({r["candidate"] for r in records}) == 3
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scored"] + summary["nan"] == 3 and 0.0 <= summary["test_accuracy"] <= 1.0
    assert summary["trained"] in {r["candidate"] for r in records}
