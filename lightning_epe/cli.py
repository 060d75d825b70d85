"""The ``lightning-epe`` command: ``search``, ``score``, ``fit`` and ``benchmark``.

Configuration follows LightningCLI conventions (jsonargparse): subcommands from
``add_subcommands``, ``--config FILE`` (YAML) after the subcommand, dotted overrides such as
``--search.budget 10``, ``class_path``/``init_args`` for the data module, the space and a search
strategy of your own, and ``--print_config`` to show the effective configuration.
"""
from __future__ import annotations

import os
import re
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
# The scoring-device keys at the top level of a recipe override the search section's.
DEVICE_KEYS = ("accelerator", "devices", "num_nodes", "strategy")


def _experiment_parser(command: str) -> ArgumentParser:
    """One schema for search, score and fit, so that any recipe works with every command."""
    import lightning as L
    from jsonargparse import ActionConfigFile, ArgumentParser

    from .module import CandidateModule
    from .search import ArchitectureSearch

    parser = ArgumentParser(description=COMMANDS[command], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML recipe")
    parser.add_argument("--seed_everything", type=int, default=0, help="seed for lightning.seed_everything")
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True, help="the data module")
    parser.add_argument("--results_dir", type=str | None, default=None,
                        help="results directory (scores.jsonl, summary.json, config); rerun to resume")
    parser.add_argument("--candidate", type=str | None, default=None,
                        help="fit: the candidate to train (NB201: index or arch string)")
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
    if command == "fit":
        if cfg.candidate is None:
            raise ValueError("fit needs --candidate (NB201: an index or an arch string)")
        candidate = search.space.parse(cfg.candidate)
        metrics = search.fit(init.trainer, datamodule, candidate=candidate, **cfg.model.as_dict())
        console.print(f"[bold green]test accuracy of {search.describe(candidate)}[/]: {metrics['test_acc']:.4f}",
                      soft_wrap=True)
        return {"test": metrics}
    search.results_dir = cfg.results_dir  # '' refused, ~ expanded
    # config.yaml is written with config.json, once the search has checked everything (writable, not in
    # use, same configuration, data): a refused run leaves the directory as it was
    files = {"config.yaml": parser.dump(cfg)} if search.results_dir else None
    best = search.run(datamodule, files=files).best
    if rank_zero_only.rank != 0:  # other processes of a distributed search: rank 0 reports
        return {"best": best}
    console.print(f"[bold green]best[/]: {best['arch']} (candidate {best['candidate']}), "
                  f"{search.score_label} score {best['score']:.4f}", soft_wrap=True)
    if search.results_dir:
        console.print(f"results in {search.results_dir}/")
    if command == "score":
        return {"best": best}
    metrics = search.fit(init.trainer, datamodule, **cfg.model.as_dict())
    console.print(f"[bold green]test accuracy of the best candidate[/]: {metrics['test_acc']:.4f}", soft_wrap=True)
    return {"best": best, "test": metrics}


def _usage() -> str:
    """The top-level help, without importing torch or Lightning (it must be instant)."""
    lines = [f"usage: lightning-epe [--version] {{{','.join(COMMANDS)}}} --config FILE [options]", "",
             "Training-free neural architecture search (EPE-NAS) for PyTorch Lightning.", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "Run 'lightning-epe COMMAND --help' for a command's options.", "  --version  print the version"]
    return "\n".join(lines)


def _accepted_hint(message: str) -> str:
    """The accepted values of the option a jsonargparse error names (``Parser key "search.budget"``)."""
    from .search._checks import ACCEPTED

    match = re.search(r'key "([\w.]+)"', message)
    accepted = ACCEPTED.get(match.group(1).rsplit(".", 1)[-1]) if match else None
    return f"\n  accepted for --{match.group(1)}: {accepted}" if accepted else ""


def main(argv: list[str] | None = None) -> int:
    """The ``lightning-epe`` command; returns the exit code (130 after Ctrl-C, at any moment)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # during start-up (imports, parsing); the run has its own message
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
    if command not in COMMANDS:
        print(f"lightning-epe: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    subparser = subcommand_parser(command)
    try:
        cfg = build_parser({command: subparser}).parse_args(argv)[command]
    except Exception as err:  # jsonargparse reports unknown keys and wrong types here
        print(f"lightning-epe {command}: error: {err}{_accepted_hint(str(err))}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
