"""The ``lightning-epe`` command: ``search``, ``score``, ``fit``, ``benchmark`` and ``recipes``.

Configuration follows LightningCLI conventions (jsonargparse): subcommands from
``add_subcommands``, ``--config FILE`` (YAML) after the subcommand, dotted overrides such as
``--search.budget 10``, ``class_path``/``init_args`` for the data module, the space, a search
strategy of your own and loggers, and ``--print_config`` to show the effective configuration.
Arguments are applied in order: an option after ``--config`` overrides the recipe, one before it is
overridden by it; ``--print_config`` goes last, after every override, to show the effective values.
``--config`` takes a file or the name of a built-in recipe (``--config quickstart``; ``lightning-epe recipes``
lists them): the package ships them, so they run from any directory after ``pip install``.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .deprecation import LightningEpeDeprecationWarning

if TYPE_CHECKING:  # jsonargparse, torch and Lightning load inside main(), where Ctrl-C is handled
    from jsonargparse import ArgumentParser, Namespace

COMMANDS = {
    "search": "score candidates, rank them, train the best and report its test accuracy",
    "score": "score candidates and rank them (no training)",
    "fit": "train one given candidate",
    "benchmark": "rank correlations and the paper's search table against NAS-Bench-201 ground truth",
}
RECIPES_COMMAND = "recipes"  # lists the built-in recipes (no options, no torch)
# The scoring-device keys at the top level of a recipe override the search section's.
DEVICE_KEYS = ("accelerator", "devices", "num_nodes", "strategy")
# Trainer options that do not change what a training computes: a finished training with other values of
# these is still the same training (the search command does not train it again).
DISPLAY_ONLY_TRAINER_KEYS = ("enable_progress_bar", "enable_model_summary", "logger", "log_every_n_steps",
                             "enable_checkpointing", "default_root_dir")


def _experiment_parser(command: str) -> ArgumentParser:
    """One schema for search, score and fit, so that any recipe works with every command."""
    import lightning as L
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser
    from lightning.pytorch.loggers import Logger

    from .module import CandidateModule
    from .search import ArchitectureSearch

    parser = ArgumentParser(description=COMMANDS[command], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="a YAML recipe: a file, or a built-in recipe's name (`lightning-epe recipes` lists them); "
                             "options after it override it (and --print_config goes last)")
    parser.add_argument("--seed_everything", type=int, default=0, help="seed for lightning.seed_everything")
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True, help="the data module")
    parser.add_argument("--results_dir", type=str | None, default=None,
                        help="results directory (scores.jsonl, summary.json, config); rerun to resume")
    parser.add_argument("--candidate", type=str | None, default=None,
                        help="fit: the candidate to train (NB201: index or arch string); default: the best of "
                             "--results_dir")
    parser.add_argument("--refit", action=ActionYesNo, default=False,
                        help="search: train the best again even when summary.json already holds its finished "
                             "training with this configuration")
    parser.add_argument("--module", type=str | None, default=None,
                        help="your own LightningModule class, or a factory network -> LightningModule, as a dotted "
                             "path "
                             "(my_package.MyModule): it trains the best, called as module(network, **module_options), "
                             "instead of CandidateModule (the model section is then not used)")
    parser.add_argument("--module_options", type=dict | None, default=None,
                        help="keyword arguments of --module (YAML: module_options: {lr: 0.01})")
    parser.add_argument("--logger", type=Logger | list[Logger] | None, default=None,
                        help="a Lightning logger (or a list) for the whole job: the search logs every candidate to "
                             "it and the training too (replacing trainer.logger); search.logger: the search only")
    group = parser.add_argument_group("scoring devices (override the search section; Lightning's vocabulary)")
    group.add_argument("--accelerator", type=str | None, default=None, help="cpu, gpu, cuda, mps or auto")
    group.add_argument("--devices", type=int | str | None, default=None, help="devices (processes) per node")
    group.add_argument("--num_nodes", type=int | None, default=None, help="nodes")
    group.add_argument("--strategy", type=str | None, default=None,
                       help="Lightning's distributed strategy for several devices: ddp, ddp_spawn, ...")
    parser.add_class_arguments(ArchitectureSearch, "search", skip={"results_dir"})
    parser.add_class_arguments(CandidateModule, "model", skip={"candidate", "num_classes", "space", "build_options"},
                               instantiate=False)
    parser.add_class_arguments(L.Trainer, "trainer")
    return parser


def _benchmark_parser() -> ArgumentParser:
    from jsonargparse import ActionConfigFile, ArgumentParser

    from .benchmark import run_benchmark

    parser = ArgumentParser(description=COMMANDS["benchmark"], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the arguments below")
    parser.add_function_arguments(run_benchmark)
    return parser


def subcommand_parser(command: str) -> ArgumentParser:
    return _benchmark_parser() if command == "benchmark" else _experiment_parser(command)


def build_parser(subparsers: dict[str, ArgumentParser]) -> ArgumentParser:
    """The ``lightning-epe`` parser with ``subparsers`` as its subcommands (``{name: subcommand_parser(name)}``).

    ``main`` builds only the subcommand it runs: each subcommand's parser describes Lightning's
    classes, and building one costs about an ``import lightning``.
    """
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="lightning-epe", description="Training-free neural architecture search "
                            "(EPE-NAS) for PyTorch Lightning.", exit_on_error=False)
    parser.add_argument("--version", action="version", version=f"lightning-epe {__version__}")
    subcommands = parser.add_subcommands(required=True, dest="subcommand")
    for name, subparser in subparsers.items():
        subcommands.add_subcommand(name, subparser, help=COMMANDS[name])
    return parser


def save_config(parser: ArgumentParser, cfg: Namespace, directory: str) -> None:
    """The effective configuration as ``config.yaml`` beside the records (LightningCLI's
    ``SaveConfigCallback`` idea), replaced atomically."""
    from .search.store import write_text_atomic

    write_text_atomic(Path(directory) / "config.yaml", parser.dump(cfg))


def _run_experiment(command: str, cfg: Namespace, parser: ArgumentParser) -> dict:
    import lightning as L
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    from .search._checks import MAX_SEED, check_int
    from .search.progress import console

    L.seed_everything(check_int("seed_everything", cfg.seed_everything, 0, MAX_SEED, flag="--seed_everything"),
                      verbose=False)
    init = parser.instantiate(cfg)
    datamodule, search = init.data, init.search
    for key in DEVICE_KEYS:
        if cfg[key] is not None:
            setattr(search, key, cfg[key])
    if init.logger is not None:  # one logger for the whole job: the search and the training
        search.logger = init.logger
        init.trainer.loggers = list(init.logger) if isinstance(init.logger, (list, tuple)) else [init.logger]
    if command == "fit":
        return _fit(cfg, parser, init, search)
    search.results_dir = cfg.results_dir  # '' refused, ~ expanded
    # config.yaml is written with config.json, once the search has checked everything (writable, not in
    # use, same configuration, data): a refused run leaves the directory as it was
    files = {"config.yaml": _dump(parser, cfg)} if search.results_dir else None
    best = search.run(datamodule, files=files).best
    if rank_zero_only.rank != 0:  # other processes of a distributed search: rank 0 reports
        return {"best": best}
    console.print(f"[bold green]best[/]: {best['arch']} (candidate {best['candidate']}), "
                  f"{search.score_label} score {best['score']:.4f}", soft_wrap=True)
    if search.results_dir:
        console.print(f"results in {search.results_dir}/")
    if command == "score":
        if search.shortlist.enabled:
            console.print(f"note: the shortlist stage (k={search.shortlist.k}) trains, so it runs with `search`, not "
                          "`score`", soft_wrap=True)
        return {"best": best}
    candidate = search.select(datamodule, report=lambda text: console.print(text, soft_wrap=True),
                              **_module_options(cfg))
    what = "the best candidate"
    if search.shortlist_result is not None:
        won = search.shortlist_result["winner"]
        value = "" if won["value"] is None else f", {search.shortlist_result['metric']} {won['value']:.4f}"
        console.print(f"[bold green]shortlist winner[/]: {won['arch']} (candidate {won['candidate']}{value}; "
                      f"{search.shortlist_result['seconds']:.1f} s)", soft_wrap=True)
        what = "the shortlist's winner"
    fit_id = fit_config_id(parser, cfg, candidate, search, datamodule)
    if search.results_dir and not cfg.refit:
        done = _finished_fit(search.results_dir, candidate, fit_id)
        if done is not None:  # the main job resumes as a whole: its training is done too
            console.print(f"[bold green]test accuracy of {what}[/]: {done['test_accuracy']:.4f} "
                          f"(trained before with this configuration: {search.results_dir}/summary.json; --refit "
                          "trains it again)", soft_wrap=True)
            threads = (done.get("fit") or {}).get("torch_threads")
            if threads is not None and threads != torch_threads():
                console.print(f"[yellow]note[/]: it was trained with {threads} torch thread(s), this run has "
                              f"{torch_threads()}: training again here would give slightly different numbers "
                              "(README: which numbers repeat)", soft_wrap=True)
            return {"best": best, "test": done.get("test_metrics")}
    metrics = search.fit(init.trainer, datamodule, candidate=candidate, fit_config_id=fit_id, **_module_options(cfg))
    _report_test(metrics, what)
    return {"best": best, "test": metrics, "shortlist": search.shortlist_result}


def _module_options(cfg: Namespace) -> dict:
    """``search.fit``'s keyword arguments of the module that trains: ``--module`` and its options, or the model
    section (CandidateModule's)."""
    if cfg.module is None:
        return cfg.model.as_dict()
    return {"module": cfg.module, **(cfg.module_options or {})}


def _report_test(metrics: dict, what: str) -> None:
    from .search.progress import console

    if "test_acc" in metrics:
        console.print(f"[bold green]test accuracy of {what}[/]: {metrics['test_acc']:.4f}", soft_wrap=True)
    else:
        console.print(f"[bold green]trained {what}[/]" + (f"; test metrics: {metrics}" if metrics else
                      " (the module has no test_step, or logs no test_acc)"), soft_wrap=True)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _fit(cfg: Namespace, parser: ArgumentParser, init: Namespace, search) -> dict:
    """``fit``: train ``--candidate``, or by default the best of ``--results_dir`` (a finished search's
    directory). Training the directory's best records the training in its ``summary.json``, as the
    ``search`` command does."""
    from .search.progress import console
    from .search.search import read_directory
    from .search.store import SUMMARY, resolve_results_dir

    directory = resolve_results_dir(cfg.results_dir)
    config, summary = read_directory(directory) if directory is not None and directory.is_dir() else (None, {})
    best = summary.get("best")
    won = (summary.get("shortlist") or {}).get("winner")
    if best and won:  # a search with a shortlist stage: its winner is the directory's pick
        best = {"candidate": won["candidate"], "arch": won.get("arch"),
                "score": f"{summary['shortlist'].get('metric')} {won.get('value')} (the shortlist's winner)"}
    if cfg.candidate is None:
        if not best:
            where = (f"{directory} holds no finished search (no {SUMMARY} with a best candidate): run "
                     "`lightning-epe search` or `score` with it first" if directory is not None else
                     "no --results_dir is given")
            raise ValueError(f"fit trains --candidate (NB201: an index or an arch string), or by default the best "
                             f"of --results_dir; {where}, or give --candidate")
        candidate = search.space.parse(best["candidate"])
        console.print(f"training the best of {directory}/: {best.get('arch', candidate)} (candidate "
                      f"{best['candidate']}), score {best.get('score')}", soft_wrap=True)
    else:
        candidate = search.space.parse(cfg.candidate)
    if best and candidate == search.space.parse(best["candidate"]):
        search.results_dir = directory  # the directory's best: its training goes into its summary.json
    fit_id = fit_config_id(parser, cfg, candidate, search, init.data)
    metrics = search.fit(init.trainer, init.data, candidate=candidate, fit_config_id=fit_id, directory_config=config,
                         **_module_options(cfg))
    _report_test(metrics, search.describe(candidate))
    return {"test": metrics}


def _dump(parser: ArgumentParser, cfg: Namespace) -> str:
    """The effective configuration as YAML, without ``refit`` (a one-off request, not part of the recipe)."""
    cfg = cfg.clone()
    cfg.refit = False
    return parser.dump(cfg)


def fit_config_id(parser: ArgumentParser, cfg: Namespace, candidate, search, datamodule) -> str:
    """The id of what determines a training's numbers: the candidate, the network's build options and
    classes, the data, model and trainer sections (less :data:`DISPLAY_ONLY_TRAINER_KEYS`) and the seed."""
    import yaml

    dumped = yaml.safe_load(parser.dump(cfg, skip_validation=True))
    trainer = {k: v for k, v in (dumped.get("trainer") or {}).items() if k not in DISPLAY_ONLY_TRAINER_KEYS}
    part = {"candidate": candidate, "space": (dumped.get("search") or {}).get("space"),
            "build_options": search.build_options_for(datamodule),
            "num_classes": search.num_classes or getattr(datamodule, "num_classes", None),
            "seed_everything": dumped.get("seed_everything"), "data": dumped.get("data"),
            "model": dumped.get("model"), "trainer": trainer,
            **({"module": dumped.get("module"), "module_options": dumped.get("module_options")}
               if dumped.get("module") else {})}
    text = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finished_fit(directory: str, candidate, fit_id: str) -> dict | None:
    """``summary.json`` of ``directory`` when it holds the finished training of ``candidate`` with the
    configuration ``fit_id``, else None."""
    from .search.store import SUMMARY, _read_json_file

    summary = _read_json_file(Path(directory) / SUMMARY, "the best is trained again") or {}
    fit = summary.get("fit") or {}
    if (summary.get("trained") == candidate and fit.get("config_id") == fit_id
            and isinstance(summary.get("test_accuracy"), (int, float))):
        return summary
    return None


def _usage() -> str:
    """The top-level help, without importing torch or Lightning (it must be instant)."""
    lines = [f"usage: lightning-epe [--version] {{{','.join(COMMANDS)}}} --config RECIPE [options]",
             f"       lightning-epe {RECIPES_COMMAND}", "",
             "Training-free neural architecture search (EPE-NAS) for PyTorch Lightning.", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += [f"  {RECIPES_COMMAND:<10} list the built-in recipes (RECIPE: a file or one of their names)"]
    lines += ["", "Run 'lightning-epe COMMAND --help' for a command's options.", "  --version  print the version",
              "", "Threads: OpenMP threads wait passively (OMP_WAIT_POLICY=PASSIVE) unless OMP_WAIT_POLICY is set,",
              "so a busy machine does not slow scoring down many times; OMP_NUM_THREADS sets their number."]
    return "\n".join(lines)


# Options of the shared schema that only one command uses: given to another, they would be silently ignored.
ONLY_FOR = {"candidate": "fit", "refit": "search"}


def check_applies(command: str, cfg: Namespace) -> None:
    """Refuse an option (command line or recipe) that the command would ignore (``search --candidate``)."""
    for key, owner in ONLY_FOR.items():
        if command != owner and cfg.get(key) not in (None, False):
            raise ValueError(f"--{key} applies to the {owner} command only; `{command}` would ignore it (given: "
                             f"{cfg.get(key)!r}). Use `lightning-epe {owner} ...`, or leave it out")


def check_config_files(argv: list[str]) -> None:
    """Each ``--config FILE`` is a UTF-8 YAML mapping without a repeated key (YAML keeps the last of two
    silently); a clear error naming the file otherwise. (A ``--config`` that is not a file is left to
    jsonargparse.)"""
    import yaml

    expected = ("expected a YAML mapping of the recipe's sections (data:, search:, model:, trainer:, ...), as "
                "recipes/quickstart.yaml")
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else None)
        if value is None or not os.path.isfile(value):
            continue
        data = Path(value).read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"the config file {value} is not text (byte {data[err.start]:#04x} at offset "
                             f"{err.start} is not UTF-8): {expected}") from None
        try:
            loaded = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
        except RepeatedKey as err:
            raise ValueError(f"the config file {value}: {err}") from None
        except yaml.YAMLError as err:
            raise ValueError(f"the config file {value} is not valid YAML: {err}") from None
        if loaded is None:
            raise ValueError(f"the config file {value} is empty: {expected}")
        if not isinstance(loaded, dict):
            raise ValueError(f"the config file {value} holds a YAML {type(loaded).__name__}, not a mapping: {expected}")


class RepeatedKey(ValueError):
    """A key given twice in one mapping of a YAML file."""


def _unique_key_loader():
    """A ``yaml.SafeLoader`` that refuses a key repeated in one mapping (made when needed: yaml loads in main)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise RepeatedKey(f"the key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                                      f"{key_node.start_mark.line + 1}); YAML would keep the last silently: delete one")
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _protocol_hint(message: str) -> str:
    """Which method a YAML ``class_path`` lacks, when jsonargparse says it "does not implement protocol Strategy"."""
    import importlib

    from .search.strategies import protocol_problem

    match = re.search(r"Import path ([\w.]+) does not implement protocol Strategy", message)
    if not match:
        return ""
    module, _, name = match.group(1).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return ""
    return f"\n  {protocol_problem(cls)}"


def _accepted_hint(message: str) -> str:
    """The accepted values of the option a jsonargparse error names (``Parser key "search.budget"``)."""
    from .search._checks import ACCEPTED

    match = re.search(r'key "([\w.]+)"', message)
    accepted = ACCEPTED.get(match.group(1).rsplit(".", 1)[-1]) if match else None
    return f"\n  accepted for --{match.group(1)}: {accepted}" if accepted else ""


def built_in_recipes(argv: list[str]) -> list[str]:
    """``argv`` with each ``--config NAME`` that is not a file replaced by the built-in recipe of that name."""
    from .recipes import recipe_path

    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--config" and i + 1 < len(out):
            out[i + 1] = recipe_path(out[i + 1])
        elif arg.startswith("--config="):
            out[i] = "--config=" + recipe_path(arg.removeprefix("--config="))
    return out


def _list_recipes(args: list[str]) -> int:
    """``lightning-epe recipes``: one line per built-in recipe (its name and summary), then where they are."""
    from .recipes import FOLDER, list_recipes

    if args:
        print(f"lightning-epe {RECIPES_COMMAND}: takes no options, got {' '.join(args)}", file=sys.stderr)
        return 2
    recipes = list_recipes()
    width = max(map(len, recipes))
    for name, summary in recipes.items():
        print(f"{name:<{width}}  {summary}")
    print(f"\nRun one with `lightning-epe search --config NAME`; the files are in {FOLDER}/ (copy one to change it).")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The ``lightning-epe`` command; returns the exit code (130 after Ctrl-C, at any moment)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BaseException as err:
        # Ctrl-C during start-up (imports, parsing; the run has its own message). An interrupt that cuts an
        # import short can surface as another error (numpy half imported: a RecursionError), so any error
        # raised after Ctrl-C counts as the interrupt.
        if not (isinstance(err, KeyboardInterrupt) or (isinstance(err, Exception) and _interrupted)):
            raise
        command = argv[0] if argv and argv[0] in COMMANDS else ""
        print(f"lightning-epe{' ' + command if command else ''}: interrupted during start-up; nothing was "
              "scored", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    warnings.simplefilter("always", LightningEpeDeprecationWarning)  # a recipe's 0.1 keys: say what replaces them
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        print(f"lightning-epe {__version__}")
        return 0
    command = argv[0]
    if command == RECIPES_COMMAND:
        return _list_recipes(argv[1:])
    if command not in COMMANDS:
        print(f"lightning-epe: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}, "
              f"{RECIPES_COMMAND}", file=sys.stderr)
        return 2
    if command != "benchmark":
        try:
            argv = built_in_recipes(argv)
        except ValueError as err:
            print(f"lightning-epe {command}: error: {err}", file=sys.stderr)
            return 2
    try:
        check_config_files(argv)
    except ValueError as err:
        print(f"lightning-epe {command}: error: {err}", file=sys.stderr)
        return 2
    subparser = subcommand_parser(command)
    try:
        cfg = build_parser({command: subparser}).parse_args(argv)[command]
        check_applies(command, cfg)
    except Exception as err:  # jsonargparse reports unknown keys and wrong types here
        print(f"lightning-epe {command}: error: {err}{_accepted_hint(str(err))}{_protocol_hint(str(err))}",
              file=sys.stderr)
        return 2
    try:
        if command == "benchmark":
            from .benchmark import run_benchmark

            cfg = cfg.clone()
            cfg.pop("config", None)
            run_benchmark(**cfg.as_dict())
        else:
            _run_experiment(command, cfg, subparser)
    except KeyboardInterrupt:
        message = f"lightning-epe {command}: interrupted"
        if command in ("search", "score"):
            where = cfg.results_dir and os.path.expanduser(cfg.results_dir)
            message += (f"; the records so far are safe in {where}: rerun the same command to resume"
                        if where else " (give --results_dir to make a search resumable)")
        print(message, file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        print(f"lightning-epe {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


def use_passive_openmp_waiting() -> None:
    """OpenMP threads that wait passively, unless the user set ``OMP_WAIT_POLICY``; before torch is imported.

    torch's OpenMP threads spin while they wait for a sibling; on a machine shared with other jobs
    (a laptop, a CI runner, a shared server) a descheduled sibling makes them spin for whole time
    slices: measured on a 2-core machine under load, the quickstart took 402 s with the default and
    26 s with passive waiting (19 s idle). The library's functions leave a user's own process alone.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_interrupted = False


def _interrupt(signum, frame) -> None:
    """Python's own Ctrl-C handler, remembering that it happened (see :func:`main`)."""
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def run() -> None:
    """The console script (and ``python -m lightning_epe.cli``): :func:`main` on the process's arguments.

    After Ctrl-C the process ends at once with 130: its records are already synced and its lock
    released, and an interrupt that cut an import short (torch's, during start-up) can otherwise
    make the interpreter's shutdown end the process by SIGINT instead (-2, seen 1 run in ~8).
    """
    use_passive_openmp_waiting()
    signal.signal(signal.SIGINT, _interrupt)
    code = main()
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    run()
