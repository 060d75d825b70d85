"""The ``lightning-epe`` command: ``search``, ``score``, ``fit`` and ``benchmark``.

Configuration follows LightningCLI conventions (jsonargparse): ``--config FILE`` (YAML), dotted
overrides such as ``--search.budget 10``, ``class_path``/``init_args`` for the data module and the
space, and ``--print_config`` to show the effective configuration.
"""
from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from . import __version__

COMMANDS = {
    "search": "score candidates, rank them, train the best and report its test accuracy",
    "score": "score candidates and rank them (no training)",
    "fit": "train one given candidate",
    "benchmark": "rank correlations and the paper's search table against NAS-Bench-201 ground truth",
}


def _experiment_parser(command: str) -> ArgumentParser:
    import lightning as L

    from .module import CandidateModule
    from .search import ArchitectureSearch

    parser = ArgumentParser(prog=f"lightning-epe {command}", description=COMMANDS[command], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML recipe")
    parser.add_argument("--seed_everything", type=int, default=0, help="seed for lightning.seed_everything")
    parser.add_subclass_arguments(L.LightningDataModule, "data", required=True, help="the data module")
    # One schema for search, score and fit, so that any recipe works with every command.
    parser.add_argument("--results_dir", type=str | None, default=None,
                        help="results directory (scores.jsonl, summary.json, config); rerun to resume")
    parser.add_argument("--candidate", type=str | None, default=None,
                        help="fit: the candidate to train (NB201: index or arch string)")
    group = parser.add_argument_group("scoring devices (override the search section; Lightning's vocabulary)")
    group.add_argument("--accelerator", type=str | None, default=None, help="cpu, gpu, cuda, mps or auto")
    group.add_argument("--devices", type=int | str | None, default=None, help="devices (processes) per node")
    group.add_argument("--num_nodes", type=int | None, default=None, help="nodes")
    group.add_argument("--strategy", type=str | None, default=None, help="ddp, ddp_spawn, ... for several devices")
    parser.add_class_arguments(ArchitectureSearch, "search", skip={"results_dir"})
    parser.add_class_arguments(CandidateModule, "model", skip={"candidate", "num_classes", "space", "build_options"},
                               instantiate=False)
    parser.add_class_arguments(L.Trainer, "trainer")
    return parser


def _benchmark_parser() -> ArgumentParser:
    from .benchmark import run_benchmark

    parser = ArgumentParser(prog="lightning-epe benchmark", description=COMMANDS["benchmark"], exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of the arguments below")
    parser.add_function_arguments(run_benchmark)
    return parser


def _run_experiment(command: str, cfg: Namespace, parser: ArgumentParser) -> dict:
    import lightning as L

    from .module import CandidateModule
    from .search.progress import console
    from .search.store import ResultsStore, write_text_atomic

    from lightning.fabric.utilities.rank_zero import rank_zero_only

    L.seed_everything(cfg.seed_everything, verbose=False)
    init = parser.instantiate(cfg)
    datamodule, search = init.data, init.search
    for key, attribute in (("accelerator", "accelerator"), ("devices", "devices"), ("num_nodes", "num_nodes"),
                           ("strategy", "distributed_strategy")):
        if cfg[key] is not None:
            setattr(search, attribute, cfg[key])
    if command in ("search", "score"):
        search.results_dir = cfg.results_dir
        if cfg.results_dir and rank_zero_only.rank == 0:  # the effective configuration, beside the records
            # checked first (writable? same configuration?), so a refused run leaves the directory as it was
            ResultsStore(cfg.results_dir).check_config(search.config(datamodule), force=search.force)
            write_text_atomic(Path(cfg.results_dir) / "config.yaml", parser.dump(cfg))
        search.run(datamodule)
        best = search.result.best
        if rank_zero_only.rank != 0:  # other processes of a distributed search: rank 0 reports
            return {"best": best}
        console.print(f"[bold green]best[/]: {best['arch']} (candidate {best['candidate']}), "
                      f"{search.score_label} score {best['score']:.4f}", soft_wrap=True)
        if cfg.results_dir:
            console.print(f"results in {cfg.results_dir}/")
        if command == "score":
            return {"best": best}
        metrics = search.fit(init.trainer, datamodule, **cfg.model.as_dict())
        console.print(f"[bold green]test accuracy of the best candidate[/]: {metrics['test_acc']:.4f}", soft_wrap=True)
        return {"best": best, "test": metrics}
    if cfg.candidate is None:
        raise ValueError("fit needs --candidate (NB201: an index or an arch string)")
    candidate = search.space.parse(cfg.candidate)
    module = CandidateModule(candidate, num_classes=search.num_classes or datamodule.num_classes,
                             space=search.space, build_options=search.build_options_for(datamodule),
                             **cfg.model.as_dict())
    init.trainer.fit(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in init.trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}
    console.print(f"[bold green]test accuracy of {search.describe(candidate)}[/]: {metrics['test_acc']:.4f}", soft_wrap=True)
    return {"test": metrics}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        lines = [f"usage: lightning-epe {{{','.join(COMMANDS)}}} --config FILE [options]", "",
                 "Training-free neural architecture search (EPE-NAS) for PyTorch Lightning.", "", "commands:"]
        lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
        lines += ["", "Run 'lightning-epe COMMAND --help' for a command's options.", "  --version  print the version"]
        print("\n".join(lines))
        return 0
    if argv[0] == "--version":
        print(f"lightning-epe {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"lightning-epe: unknown command {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    parser = _benchmark_parser() if command == "benchmark" else _experiment_parser(command)
    try:
        cfg = parser.parse_args(rest)
    except Exception as err:  # jsonargparse reports unknown keys and wrong types here
        print(f"lightning-epe {command}: error: {err}", file=sys.stderr)
        return 2
    try:
        if command == "benchmark":
            from .benchmark import run_benchmark

            cfg = cfg.clone()
            cfg.pop("config", None)
            run_benchmark(**cfg.as_dict())
        else:
            _run_experiment(command, cfg, parser)
    except KeyboardInterrupt:
        message = f"lightning-epe {command}: interrupted"
        if command in ("search", "score"):
            message += (f"; the records so far are safe in {cfg.results_dir}: rerun the same command to resume"
                        if cfg.results_dir else " (give --results_dir to make a search resumable)")
        print(message, file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, OSError) as err:
        print(f"lightning-epe {command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
