"""ArchitectureSearch: score candidates of a space, rank them, hand the best to a Lightning Trainer."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable

import torch

from ..deprecation import deprecated
from ..scores import score_info
from ..scores._isolation import owned_networks
from ..scores._validation import (
    check_output_selector,
    describe_output_selector,
    explain_error,
    nan_reason,
    selecting_output,
)
from ..scores.draws import Draws, rank_draws, score_draws
from ..spaces import CandidateSpace, ListSpace, NB201Space
from ..spaces.base import Builder
from ._checks import MAX_SEED, check_int
from .batches import ScoringBatches
from .lock import DirectoryLock
from .loggers import as_loggers
from .loop import SearchLoop, SearchResult
from .shortlist import Shortlist, run_shortlist
from .store import (
    CONFIG,
    SUMMARY,
    ConfigMismatchError,
    _read_json_file,
    finite_json,
    resolve_results_dir,
    write_json_atomic,
    write_text_atomic,
)
from .strategies import RegularizedEvolution, Strategy, describe_strategy, list_strategies, make_strategy

if TYPE_CHECKING:  # (Lightning loads only when a logger is used; jsonargparse resolves the annotation)
    from lightning.pytorch.loggers import Logger


class ArchitectureSearch:
    """Score candidates of a space with a training-free score and pick the best.

    Args:
        space: the candidate space (default: NAS-Bench-201), or a plain list or dict of candidates (factories
            returning an ``nn.Module``, timm model names, or name -> factory; a
            :class:`~lightning_epe.spaces.ListSpace`, whose names are the record ids). With the default
            strategy and budget, a list is scored whole, each candidate once (``exhaustive``).
        score: a registered score name (see ``lightning_epe.scores.list_scores()``), or the dotted
            path of a function registered with ``@register_score``.
        search_strategy: a registered name, ``random`` (the paper: uniform with replacement),
            ``random_without_replacement``, ``exhaustive`` or ``evolution`` (regularized/aging
            evolution with the score as fitness), or a :class:`~lightning_epe.search.Strategy`
            instance (YAML: ``class_path``/``init_args``), e.g. ``RegularizedEvolution(population=50)``.
        budget: number of candidates to score, an int >= 1 (exhaustive: None means the whole space).
        seed: seeds the strategy, the scoring batches and every candidate's initialisation (an int in
            0..4294967295, as ``lightning.seed_everything``). None (default): Lightning's global seed when one is
            set (``seed_everything(s)`` before creating the search, or ``PL_GLOBAL_SEED``), else 0. ``seed`` then
            holds the seed used, recorded in ``config.json`` and ``summary.json``.
        batch_policy: ``fixed`` (one batch for every candidate) or ``fresh`` (a new augmented
            batch per candidate, as the official search).
        batch_size: scoring batch size, an int >= 2 (default: the datamodule's ``batch_size``).
        accelerator: where to score, in Lightning's vocabulary (``auto``, ``cpu``, ``gpu``, ...).
        devices: devices (processes) per node scoring in parallel (Lightning's ``devices``).
        num_nodes: nodes scoring in parallel.
        strategy: Lightning's distributed strategy for several devices (``auto``, ``ddp``, ...), as
            ``Trainer(strategy=...)``.
        num_classes: classes of the networks, an int >= 1 (default: the datamodule's ``num_classes``).
        build_options: extra keyword arguments for ``space.build`` (e.g. ``{"C": 16, "N": 5}``).
        score_options: extra keyword arguments for the score (e.g. ``{"class_count": "true"}``).
        draws: score each candidate k times, over batches, initialisations or both, and combine
            the draws (``Draws(k=4, over="batches", combine="mean")``; YAML ``draws: {k: 4}``).
            Default: one draw, the plain score.
        shortlist: the optional second stage (:class:`~lightning_epe.search.Shortlist`; YAML ``shortlist: {k: 5,
            epochs: 1, metric: val_acc}``): after scoring, the k best-scored candidates are trained briefly with a
            Lightning Trainer on the same DataModule and the best by ``metric`` goes to :meth:`fit` instead of the
            training-free pick (:meth:`select`). Default: off (k=0).
        output: which part of a network's output is the logits: None (a tensor, ``.logits``, or the
            last element of a ``(features, logits)`` pair; longer tuples are refused as ambiguous), an
            int index, an attribute or key name (``"logits"``), or a function output -> logits (YAML:
            its dotted path).
        results_dir: directory of ``scores.jsonl``/``summary.json``/``config.json`` (``~`` is expanded);
            rerunning with the same directory resumes. One search at a time writes to it (a lock).
        force: run a changed configuration in a results directory written by another one. Records
            scored the same way (only the strategy, its options or the budget changed) are kept and
            continued; otherwise the old files are moved to ``results_dir/previous/N/`` and scoring
            starts afresh. Records of two configurations are never mixed; nothing is deleted.
        progress: show the progress (a rich bar on a terminal, plain periodic lines on stderr when it is not
            one: CI logs, ``nohup``, ``| tee``) and the final leaderboard.
        logger: a Lightning logger (``CSVLogger``, ``TensorBoardLogger``, ``WandbLogger``, ``MLFlowLogger``, ...)
            or a list of them: each candidate's ``search/score``, ``search/seconds`` and
            ``search/best_score`` (the running best) are logged at step = trial, and the final
            leaderboard as a table where the logger has one (CSVLogger: ``leaderboard.csv`` in its
            ``log_dir``; TensorBoard: the TEXT tab). YAML: ``class_path``/``init_args``, as
            ``trainer.logger``. The same logger can be given to the Trainer that trains the best.
        distributed_strategy: deprecated (0.1) name of ``strategy``.
        population: deprecated (0.1): use ``search_strategy=RegularizedEvolution(population=...)``.
        sample_size: deprecated (0.1): use ``search_strategy=RegularizedEvolution(sample_size=...)``.
    """

    def __init__(
        self,
        space: CandidateSpace | list[str] | dict[str, str] | None = None,
        score: str = "epe",
        search_strategy: Strategy | str = "random",
        budget: int | None = 100,
        seed: int | None = None,
        batch_policy: str = "fixed",
        batch_size: int | None = None,
        accelerator: str = "auto",
        devices: int | str = 1,
        num_nodes: int = 1,
        strategy: str = "auto",
        num_classes: int | None = None,
        build_options: dict | None = None,
        score_options: dict | None = None,
        draws: Draws = Draws(),
        shortlist: Shortlist = Shortlist(),
        output: int | str | Callable[[Any], torch.Tensor] | None = None,
        results_dir: str | None = None,
        force: bool = False,
        progress: bool = True,
        logger: Logger | list[Logger] | None = None,
        distributed_strategy: str | None = None,
        population: int | None = None,
        sample_size: int | None = None,
    ):
        search_strategy, strategy = _renamed_strategies(search_strategy, strategy, distributed_strategy,
                                                        population, sample_size)
        if isinstance(space, (list, tuple, dict)):  # a plain list: rank it whole unless told otherwise
            space = ListSpace(space)
            if search_strategy == "random" and budget == 100:
                search_strategy, budget = "exhaustive", None
        self.space = space if space is not None else NB201Space()
        self.score_name = score
        self.score_info = score_info(score)
        budget = check_int("budget", budget, 1, none="None: the whole space, exhaustive only")
        seed = check_int("seed", global_seed() if seed is None else seed, 0, MAX_SEED)
        batch_size = check_int("batch_size", batch_size, 2, none="None: the datamodule's batch_size")
        num_classes = check_int("num_classes", num_classes, 1, none="None: the datamodule's num_classes")
        make_strategy(search_strategy, self.space, budget, seed)  # validate early
        self.search_strategy, self.budget, self.seed = search_strategy, budget, seed
        self.batch_policy, self.batch_size = batch_policy, batch_size
        self.accelerator, self.num_classes = accelerator, num_classes
        self.devices, self.num_nodes, self.strategy = devices, num_nodes, strategy
        self.build_options, self.score_options = dict(build_options or {}), dict(score_options or {})
        self.draws = Draws.of(draws)
        self.shortlist = Shortlist.of(shortlist)
        self.shortlist_result: dict | None = None
        if self.draws.relative and self.score_info.relative:
            raise ValueError(f"draws combine='rank' cannot rank {score!r}, which already ranks candidates: "
                             "combine its draws with 'mean' or 'median'")
        self.output = check_output_selector(output)
        self.results_dir, self.force, self.progress = results_dir, force, progress
        as_loggers(logger)  # validate early
        self.logger = logger
        self.result: SearchResult | None = None

    @property
    def results_dir(self) -> str | None:
        return self._results_dir

    @results_dir.setter
    def results_dir(self, value) -> None:
        path = resolve_results_dir(value)  # '' refused, ~ expanded
        self._results_dir = None if path is None else os.fspath(path)

    def config(self, datamodule=None) -> dict:
        """What determines the records; a resumed search must have the same."""
        strategy, strategy_options = describe_strategy(self.search_strategy)
        return {
            "space": getattr(self.space, "name", type(self.space).__name__),
            "score": self.score_name, "strategy": strategy, "strategy_options": strategy_options,
            "budget": self.budget, "seed": self.seed,
            "batch_policy": self.batch_policy, "batch_size": self.batch_size, "num_classes": self.num_classes,
            "build_options": self.build_options, "score_options": self.score_options,
            "data": None if datamodule is None else type(datamodule).__name__,
            **({"draws": dataclasses.asdict(self.draws)} if self.draws.k > 1 else {}),
            **({"output": describe_output_selector(self.output)} if self.output is not None else {}),
        }

    @property
    def score_label(self) -> str:
        """The score's name, and how its draws are combined when there are several."""
        if self.draws.k == 1 and not self.draws.relative:
            return self.score_name
        return f"{self.score_name} ({self.draws.combine} of {self.draws.k} draws over {self.draws.over})"

    @property
    def relative(self) -> bool:
        """Scores are ranks among the candidates so far (a rank ensemble, or draws combined by rank)."""
        return self.score_info.relative or self.draws.relative

    def build_options_for(self, datamodule) -> dict:
        """``build_options`` plus the data's ``in_channels`` (unless set explicitly)."""
        options = dict(self.build_options)
        if getattr(datamodule, "in_channels", None) is not None:
            options.setdefault("in_channels", datamodule.in_channels)
        return options

    def candidate_seed(self, trial: int) -> int:
        return self.seed * 1_000_003 + trial

    def score_candidate(self, candidate: Hashable, trial: int, batches: ScoringBatches, builder: Builder) -> dict:
        """Build (``builder``: the space's, see ``CandidateSpace.builder``) and score one candidate; failures
        are recorded, never raised."""
        record = {"trial": trial, "candidate": candidate, "arch": self.describe(candidate),
                  "seed": self.candidate_seed(trial), "score": None, "error": None}
        start = time.perf_counter()
        # a bad batch is the data's fault: it stops the search
        draw_batches = [batches(trial, j) for j in range(self.draws.num_batches)]
        out_of_memory = False
        built: list[torch.nn.Module] = []

        def build() -> torch.nn.Module:  # the initialisations after the first (draws over inits), seeded by score_draws
            built.append(self.space.build(candidate, num_classes=builder.num_classes, **builder.options))
            return built[-1]

        try:
            built.append(builder.build(candidate, record["seed"]))
            with selecting_output(self.output), owned_networks():  # (its networks: restoring them is not needed)
                values = score_draws(build, draw_batches, self.draws, score=self.score_name, seed=record["seed"],
                                     model=built[0], device=builder.device, **self.score_options)
            if self.draws.k > 1 or self.draws.relative:
                record["draws"] = [_finite_values(v) for v in values]
            if self.score_info.relative:  # member scores; the ensemble value is a rank among candidates
                record["scores"] = _finite_values(self.draws.combine_values(values))
            elif not self.draws.relative:  # (draws combined by rank are ranked among candidates)
                record["score"] = _finite(self.draws.combine_values(values))
                if record["score"] is None:
                    record["reason"] = nan_reason(self.score_name, self.score_options, draw_batches[0][1],
                                                  builder.num_classes, self.draws.k)
        except Exception as err:  # a failing candidate is recorded and the search goes on
            record["error"] = f"{type(err).__name__}: {err}"
            record["context"] = explain_error(err, built[-1] if built else builder.network, draw_batches[0][0],
                                              self.score_name, where=f"candidate {record['arch']}",
                                              network=f"a {type(self.space).__name__} network, not built: its build "
                                                      "failed")
            err.add_note(record["context"])
            record["traceback"] = traceback.format_exc(limit=-3)  # the innermost frames: where it failed
            out_of_memory = isinstance(err, torch.OutOfMemoryError)
        built.clear()  # (the network can be freed before the next candidate)
        if out_of_memory and builder.device.type == "cuda":
            torch.cuda.empty_cache()
        record["seconds"] = round(time.perf_counter() - start, 4)
        return record

    def describe(self, candidate: Hashable) -> str:
        describe = getattr(self.space, "describe", None)
        try:
            return describe(candidate) if describe else str(candidate)
        except Exception:
            return str(candidate)

    def run(self, datamodule, files: dict[str, str] | None = None) -> SearchResult:
        """Score candidates (resuming from ``results_dir`` if it holds records) and return the result.

        ``files`` (name -> text) are written into the results directory, atomically, once every check
        has passed (the command line's ``config.yaml``).

        With several devices/nodes, each round asks one candidate per process, each process scores
        its own, and the records are gathered (rank 0 writes them). Random and exhaustive searches
        give the same records as one process; evolution proposes a round's candidates before their
        scores are known. The steps are :class:`~lightning_epe.search.loop.SearchLoop`'s.
        """
        self.result = SearchLoop(self, datamodule, files=files).run()
        return self.result

    def rank(self, records: list[dict]) -> None:
        """Set each scored record's ``score`` to its value among ``records`` (relative scores)."""
        scored = [r for r in records if r.get("error") is None]
        if self.draws.relative:
            values = rank_draws([r["draws"] for r in scored])
        else:
            table = [r["scores"] for r in scored]
            given = {k: self.score_options[k] for k in ("members", "weights", "rerank")
                     if self.score_options.get(k) is not None}
            values = self.score_info.combine(table, **given)
        for record, value in zip(scored, values):
            record["score"] = _finite(value)

    def select(self, datamodule, *, module: Callable | str | None = None, report: Callable[[str], None] | None = None,
               **module_options) -> Hashable:
        """The candidate to train: the best of the search (which runs first if it has not), or with a
        ``shortlist`` (k >= 2) the winner of its stage: the k best-scored candidates trained briefly (``module``
        and ``module_options`` as in :meth:`fit`), the best by ``shortlist.metric``. The stage's result (winner,
        rounds, seconds) is in ``shortlist_result`` and, with a ``results_dir``, in ``summary.json`` under
        ``shortlist``; its short fits are in ``shortlist.jsonl`` (resumed by a rerun). ``report(text)`` hears
        what the stage does."""
        if self.result is None:
            self.run(datamodule)
        if self.result.best is None:
            raise RuntimeError("no candidate to train: the search scored none")
        options = dict(module_options, **({"module": module} if module is not None else {}))
        self.shortlist_result = run_shortlist(self, datamodule, self.result.records, options, report=report)
        if self.shortlist_result is None:
            return self.result.best["candidate"]
        return self.shortlist_result["winner"]["candidate"]

    def fit(self, trainer, datamodule, candidate: Hashable | None = None, *, module: Callable | str | None = None,
            fit_config_id: str | None = None, directory_config: dict | None = None, **module_options) -> dict:
        """Train ``candidate`` (default: :meth:`select`'s: the best of the search, which runs first if it has not,
        or the shortlist's winner) with a
        normal ``lightning.Trainer``, test it, and return the test metrics.

        ``module``: your own LightningModule class, or a factory, called as ``module(network, **module_options)``
        with the winner's untrained network (or its dotted path); a module without ``test_step`` is not tested.
        Default: :class:`lightning_epe.CandidateModule`, which ``module_options`` configure (optimiser ...). With a
        ``results_dir``, ``summary.json`` records the trained candidate, its test metrics and ``fit``: the
        torch version, threads (``torch.get_num_threads()``: the training's numbers depend on it), whether
        the Trainer was deterministic, the seconds, and ``config_id`` (``fit_config_id``: what the command
        line uses to tell that this training is already done).

        The training is recorded only into the configuration it belongs to: the directory's ``config.json``
        when the training starts (``directory_config``: as read with the candidate, under the lock; after
        :meth:`run` in this process, the search's configuration) must still be there when it is recorded,
        under the directory's lock. Otherwise, or if the directory cannot be written (in use, disk full), a
        warning says so and the result is saved beside the directory (``RESULTS_DIR.fit-TIME.json``): a
        finished training is never thrown away.
        """
        from ..module import fit_and_test

        if candidate is None:
            candidate = self.select(datamodule, module=module, **module_options)
        if self.results_dir and directory_config is None:
            directory_config = (json.loads(json.dumps(self.config(datamodule))) if self.result is not None
                                else read_directory(self.results_dir)[0])  # (as config.json holds it)
        start = time.perf_counter()
        threads = torch.get_num_threads()
        metrics = fit_and_test(trainer, datamodule, candidate, space=self.space,
                               num_classes=self.num_classes or datamodule.num_classes,
                               build_options=self.build_options_for(datamodule), module=module, **module_options)
        if self.results_dir and getattr(trainer, "is_global_zero", True):
            fit = {"torch_threads": threads, "torch_version": torch.__version__,
                   "deterministic": torch.are_deterministic_algorithms_enabled(),
                   "seconds": round(time.perf_counter() - start, 3)}
            if fit_config_id is not None:
                fit["config_id"] = fit_config_id
            record_fit(self.results_dir, directory_config, {"test_accuracy": metrics.get("test_acc"),
                                                            "test_metrics": metrics, "trained": candidate, "fit": fit})
        return metrics


def read_directory(directory) -> tuple[dict | None, dict]:
    """``(config.json, summary.json)`` of a results directory, read under its lock (None / {} when missing or
    damaged)."""
    directory = Path(directory)
    if not directory.is_dir():
        return None, {}
    lock = DirectoryLock(directory)
    try:
        lock.acquire()
    except PermissionError:  # a read-only directory: nobody writes it (recording the training will say so)
        pass
    try:
        config = _read_json_file(directory / CONFIG, "it is ignored")
        summary = _read_json_file(directory / SUMMARY, "it is ignored") or {}
    finally:
        lock.release()
    return config, summary


def record_fit(directory, expected_config: dict | None, result: dict) -> Path | None:
    """Put a finished training's ``result`` into ``directory``'s ``summary.json``, under its lock, if the
    directory still holds ``expected_config``; otherwise (another configuration now, the lock busy, a write
    error) save it beside the directory and warn with the path (returned). Never raises: the training is done."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with DirectoryLock(directory):
            current = _read_json_file(directory / CONFIG, "it is ignored")
            if current != expected_config:
                raise ConfigMismatchError(f"{directory} now holds another configuration than the one this training "
                                          f"belongs to ({CONFIG} changed while it trained)")
            summary = _read_json_file(directory / SUMMARY, "it is rebuilt") or {}
            summary.update(result)
            write_json_atomic(directory / SUMMARY, finite_json(summary))
        return None
    except (OSError, RuntimeError) as err:  # (ResultsDirectoryBusy, ConfigMismatchError: RuntimeErrors)
        reason = str(err)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    beside = directory.with_name(f"{directory.name}.fit-{stamp}.json")
    for n in range(2, 1000):  # (never over an earlier one)
        if not beside.exists():
            break
        beside = directory.with_name(f"{directory.name}.fit-{stamp}-{n}.json")
    text = json.dumps(finite_json(result), indent=2, sort_keys=True, default=str)
    try:
        write_text_atomic(beside, text + "\n")
        where = f"it is saved in {beside}"
    except OSError as err:
        beside, where = None, f"saving it beside the directory failed too ({err}); here it is: {text}"
    warnings.warn(f"the training finished but is not recorded in {directory / SUMMARY}: {reason}. Nothing is lost: "
                  f"{where}", RuntimeWarning, stacklevel=3)
    return beside


def global_seed() -> int:
    """Lightning's global seed (``seed_everything`` sets ``PL_GLOBAL_SEED``), or 0 when none is set."""
    value = os.environ.get("PL_GLOBAL_SEED")
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"PL_GLOBAL_SEED={value!r} is not an int in 0..{MAX_SEED}: unset it or pass seed=") from None


def _renamed_strategies(search_strategy, strategy, distributed_strategy, population, sample_size):
    """``(search_strategy, strategy)`` from today's arguments and the deprecated ones of 0.1.

    In 0.1 ``strategy`` was the search algorithm and ``distributed_strategy`` Lightning's; today
    ``strategy`` means what it means for ``lightning.Trainer``.
    """
    if isinstance(strategy, str) and strategy in list_strategies():
        if search_strategy != "random":
            raise ValueError(f"strategy={strategy!r} is a search algorithm, and search_strategy={search_strategy!r} "
                             "is given too: `strategy` is now Lightning's distributed strategy (auto, ddp, ...)")
        deprecated(f"strategy={strategy!r} (search.strategy) now means Lightning's distributed strategy, as in "
                   f"Trainer(strategy=...); name the search algorithm with search_strategy={strategy!r} "
                   f"(YAML: search.search_strategy)", stacklevel=4)
        search_strategy, strategy = strategy, "auto"
    if distributed_strategy is not None:
        deprecated("distributed_strategy (search.distributed_strategy) is now called strategy (search.strategy)",
                   stacklevel=4)
        strategy = distributed_strategy
    if population is not None or sample_size is not None:
        deprecated("population/sample_size are arguments of the evolution strategy now: search_strategy="
                   "RegularizedEvolution(population=..., sample_size=...) (YAML: search_strategy: {class_path: "
                   "lightning_epe.search.RegularizedEvolution, init_args: {population: ..., sample_size: ...}})",
                   stacklevel=4)
        if search_strategy != "evolution":
            raise ValueError(f"population/sample_size apply to the evolution strategy, not {search_strategy!r}")
        search_strategy = RegularizedEvolution(population=20 if population is None else population,
                                               sample_size=5 if sample_size is None else sample_size)
    return search_strategy, strategy


def _finite(value) -> float | None:
    """A float score, or None for NaN/inf (undefined: ranked last)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _finite_values(value):
    """``_finite`` of a score, or of each member score of an ensemble (a dict)."""
    return {name: _finite(v) for name, v in value.items()} if isinstance(value, dict) else _finite(value)
