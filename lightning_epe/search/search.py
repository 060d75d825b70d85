"""ArchitectureSearch: score candidates of a space, rank them, hand the best to a Lightning Trainer."""
from __future__ import annotations

import dataclasses
import math
import time
import traceback
from typing import Hashable

import torch

from ..scores import score_info
from ..scores.draws import Draws, rank_draws, score_draws
from ..spaces import CandidateSpace, NB201Space
from .batches import ScoringBatches
from .distributed import Workers
from .progress import console, leaderboard, search_progress
from .store import ResultsStore, best_record
from .strategies import make_strategy


@dataclasses.dataclass
class SearchResult:
    """Every record of a search (in trial order) and the best one (None if none scored)."""

    records: list[dict]
    best: dict | None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r.get("error") is not None]


class ArchitectureSearch:
    """Score candidates of a space with a training-free score and pick the best.

    Args:
        space: the candidate space (default: NAS-Bench-201).
        score: a registered score name (see ``lightning_epe.scores.available()``).
        strategy: ``random`` (the paper: uniform with replacement), ``random_without_replacement``,
            ``exhaustive`` or ``evolution`` (regularized/aging evolution with the score as fitness).
        budget: number of candidates to score (exhaustive: None means the whole space).
        seed: seeds the strategy, the scoring batches and every candidate's initialisation.
        batch_policy: ``fixed`` (one batch for every candidate) or ``fresh`` (a new augmented
            batch per candidate, as the official search).
        batch_size: scoring batch size (default: the datamodule's ``batch_size``).
        accelerator: where to score, in Lightning's vocabulary (``auto``, ``cpu``, ``gpu``, ...).
        devices: devices (processes) per node scoring in parallel (Lightning's ``devices``).
        num_nodes: nodes scoring in parallel.
        distributed_strategy: Lightning strategy for several devices (``auto``, ``ddp``, ...).
        num_classes: classes of the networks (default: the datamodule's ``num_classes``).
        build_options: extra keyword arguments for ``space.build`` (e.g. ``{"C": 16, "N": 5}``).
        score_options: extra keyword arguments for the score (e.g. ``{"class_count": "true"}``).
        draws: score each candidate k times, over batches, initialisations or both, and combine
            the draws (``Draws(k=4, over="batches", combine="mean")``; YAML ``draws: {k: 4}``).
            Default: one draw, the plain score.
        population: evolution's population size.
        sample_size: evolution's tournament size.
        results_dir: directory of ``scores.jsonl``/``summary.json``/``config.json``; rerunning with
            the same directory resumes.
        force: continue in a results directory written by a different configuration.
        progress: show the rich progress bar and leaderboard.
    """

    def __init__(
        self,
        space: CandidateSpace | None = None,
        score: str = "epe",
        strategy: str = "random",
        budget: int | None = 100,
        seed: int = 0,
        batch_policy: str = "fixed",
        batch_size: int | None = None,
        accelerator: str = "auto",
        devices: int | str = 1,
        num_nodes: int = 1,
        distributed_strategy: str = "auto",
        num_classes: int | None = None,
        build_options: dict | None = None,
        score_options: dict | None = None,
        draws: Draws = Draws(),
        population: int = 20,
        sample_size: int = 5,
        results_dir: str | None = None,
        force: bool = False,
        progress: bool = True,
    ):
        self.space = space if space is not None else NB201Space()
        self.score_name = score
        self.score_info = score_info(score)
        make_strategy(strategy, self.space, budget, seed, population, sample_size)  # validate early
        self.strategy, self.budget, self.seed = strategy, budget, seed
        self.batch_policy, self.batch_size = batch_policy, batch_size
        self.accelerator, self.num_classes = accelerator, num_classes
        self.devices, self.num_nodes, self.distributed_strategy = devices, num_nodes, distributed_strategy
        self.build_options, self.score_options = dict(build_options or {}), dict(score_options or {})
        self.draws = Draws.of(draws)
        if self.draws.relative and self.score_info.relative:
            raise ValueError(f"draws combine='rank' cannot rank {score!r}, which already ranks candidates: "
                             "combine its draws with 'mean' or 'median'")
        self.population, self.sample_size = population, sample_size
        self.results_dir, self.force, self.progress = results_dir, force, progress
        self.result: SearchResult | None = None

    def config(self, datamodule=None) -> dict:
        """What determines the records; a resumed search must have the same."""
        return {
            "space": getattr(self.space, "name", type(self.space).__name__),
            "score": self.score_name, "strategy": self.strategy, "budget": self.budget, "seed": self.seed,
            "batch_policy": self.batch_policy, "batch_size": self.batch_size, "num_classes": self.num_classes,
            "build_options": self.build_options, "score_options": self.score_options,
            "population": self.population, "sample_size": self.sample_size,
            "data": None if datamodule is None else type(datamodule).__name__,
            **({"draws": dataclasses.asdict(self.draws)} if self.draws.k > 1 else {}),
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

    def score_candidate(self, candidate: Hashable, trial: int, batches: ScoringBatches, num_classes: int,
                        device: torch.device, build_options: dict) -> dict:
        """Build and score one candidate; failures are recorded, never raised."""
        record = {"trial": trial, "candidate": candidate, "arch": self.describe(candidate),
                  "seed": self.candidate_seed(trial), "score": None, "error": None}
        start = time.perf_counter()
        # a bad batch is the data's fault: it stops the search
        draw_batches = [batches(trial, j) for j in range(self.draws.num_batches)]
        out_of_memory = False
        try:
            values = score_draws(
                lambda: self.space.build(candidate, num_classes=num_classes, **build_options), draw_batches,
                self.draws, score=self.score_name, seed=record["seed"], device=device, **self.score_options)
            if self.draws.k > 1 or self.draws.relative:
                record["draws"] = [_finite_values(v) for v in values]
            if self.score_info.relative:  # member scores; the ensemble value is a rank among candidates
                record["scores"] = _finite_values(self.draws.combine_values(values))
            elif not self.draws.relative:  # (draws combined by rank are ranked among candidates)
                record["score"] = _finite(self.draws.combine_values(values))
        except Exception as err:  # a failing candidate is recorded and the search goes on
            record["error"] = f"{type(err).__name__}: {err}"
            record["traceback"] = traceback.format_exc(limit=-3)  # the innermost frames: where it failed
            out_of_memory = isinstance(err, torch.OutOfMemoryError)
        if out_of_memory and device.type == "cuda":
            torch.cuda.empty_cache()
        record["seconds"] = round(time.perf_counter() - start, 4)
        return record

    def describe(self, candidate: Hashable) -> str:
        describe = getattr(self.space, "describe", None)
        try:
            return describe(candidate) if describe else str(candidate)
        except Exception:
            return str(candidate)

    def run(self, datamodule) -> SearchResult:
        """Score candidates (resuming from ``results_dir`` if it holds records) and return the result.

        With several devices/nodes, each round asks one candidate per process, each process scores
        its own, and the records are gathered (rank 0 writes them). Random and exhaustive searches
        give the same records as one process; evolution proposes a round's candidates before their
        scores are known.
        """
        workers = Workers(self.accelerator, self.devices, self.num_nodes, self.distributed_strategy)
        device, world = workers.device, workers.world_size
        num_classes = self.num_classes or getattr(datamodule, "num_classes", None)
        if not num_classes:
            raise ValueError("num_classes is unknown: pass num_classes= or use a datamodule with a num_classes attribute")
        store = ResultsStore(self.results_dir, writer=workers.is_main) if self.results_dir else None
        if store is not None:
            store.check_config(self.config(datamodule), force=self.force)
        strategy = make_strategy(self.strategy, self.space, self.budget, self.seed, self.population, self.sample_size)
        workers.prepare_data(datamodule)
        batches = ScoringBatches(datamodule, self.batch_size, self.batch_policy, self.seed, device,
                                 num_classes=num_classes)
        build_options = self.build_options_for(datamodule)
        records: list[dict] = []
        total = self.budget if self.budget is not None else len(self.space)
        done = sum(1 for t in range(total) if store is not None and t in store)
        started = time.perf_counter()
        best = best_record(store.records.values()) if store is not None else None
        try:
            with search_progress(total, done, enabled=self.progress and workers.is_main,
                                 draws=self.draws.k) as update:
                while round_ := self._ask_round(strategy, len(records), world):
                    mine = []
                    for trial, candidate in round_[workers.rank::world]:
                        stored = self._stored(store, trial, candidate)
                        mine.append(stored or self.score_candidate(candidate, trial, batches, num_classes, device,
                                                                   build_options))
                    gathered = sorted(workers.gather(mine), key=lambda r: r["trial"])
                    records.extend(gathered)
                    if self.relative:  # provisional ranks among the candidates so far
                        self._rank(records)
                        best = best_record(records)
                    for record in gathered:
                        if store is None or record["trial"] not in store:  # newly scored
                            if store is not None:
                                store.append(record)
                            best = best_record([best, record] if best else [record])
                            update(_best_text(best))
                    for (trial, candidate), record in zip(round_, records[-len(round_):]):
                        strategy.tell(candidate, record["score"])
        except KeyboardInterrupt:
            if store is not None:
                console.print(f"[yellow]Interrupted. {len(store)} records are safe in {store.path}; "
                              "run the same command again to resume.")
            raise
        best = best_record(records)
        self.result = SearchResult(records, best)
        if store is not None and workers.is_main:
            self._write_summary(store, records, best, time.perf_counter() - started)
        if self.progress and workers.is_main:
            console.print(leaderboard(records))
        if best is None and records:
            raise RuntimeError(
                f"none of the {len(records)} candidates got a score (all failed or NaN); see the errors"
                + (f" in {store.path}" if store is not None else "")
            )
        return self.result

    def _rank(self, records: list[dict]) -> None:
        """Set each scored record's ``score`` to its value among ``records`` (relative scores)."""
        scored = [r for r in records if r.get("error") is None]
        if self.draws.relative:
            values = rank_draws([r["draws"] for r in scored])
        else:
            members = self.score_options.get("members", None)
            table = [r["scores"] for r in scored]
            values = self.score_info.combine(table, members) if members else self.score_info.combine(table)
        for record, value in zip(scored, values):
            record["score"] = _finite(value)

    @staticmethod
    def _ask_round(strategy, first_trial: int, size: int) -> list[tuple[int, Hashable]]:
        """Up to ``size`` (trial, candidate) pairs: one per process."""
        round_ = []
        while len(round_) < size and (candidate := strategy.ask()) is not None:
            round_.append((first_trial + len(round_), candidate))
        return round_

    @staticmethod
    def _stored(store: ResultsStore | None, trial: int, candidate: Hashable) -> dict | None:
        stored = store.records.get(trial) if store is not None else None
        if stored is not None and stored["candidate"] != _jsonable(candidate):
            raise RuntimeError(
                f"trial {trial} in {store.path} scored {stored['candidate']!r} but this search "
                f"proposes {candidate!r}: the results directory belongs to another search"
            )
        return stored

    def _write_summary(self, store: ResultsStore, records: list[dict], best: dict | None, seconds: float) -> None:
        summary = store.read_summary()
        summary.update({
            "best": None if best is None else {k: best[k] for k in ("trial", "candidate", "arch", "score")},
            "scored": sum(r["score"] is not None for r in records),
            "nan": sum(r["score"] is None and r["error"] is None for r in records),
            "failed": sum(r["error"] is not None for r in records),
            "score_seconds_total": round(sum(r["seconds"] for r in records), 3),
            "last_run_seconds": round(seconds, 3),
        })
        store.write_summary(summary)

    def fit(self, trainer, datamodule, **module_options) -> dict:
        """Train the best candidate with a normal ``lightning.Trainer``, test it, return the test metrics.

        ``module_options`` go to :class:`lightning_epe.CandidateModule` (optimiser settings ...).
        """
        from ..module import CandidateModule

        if self.result is None:
            self.run(datamodule)
        if self.result.best is None:
            raise RuntimeError("no candidate to train: the search scored none")
        module = CandidateModule(
            self.result.best["candidate"], num_classes=self.num_classes or datamodule.num_classes,
            space=self.space, build_options=self.build_options_for(datamodule), **module_options,
        )
        trainer.fit(module, datamodule=datamodule)
        metrics = {k: float(v) for k, v in trainer.test(module, datamodule=datamodule, verbose=False)[0].items()}
        if self.results_dir:
            store = ResultsStore(self.results_dir)
            summary = store.read_summary()
            summary.update({"test_accuracy": metrics.get("test_acc"), "test_metrics": metrics,
                            "trained": self.result.best["candidate"]})
            store.write_summary(summary)
        return metrics


def _finite(value) -> float | None:
    """A float score, or None for NaN/inf (undefined: ranked last)."""
    value = float(value)
    return value if math.isfinite(value) else None


def _finite_values(value):
    """``_finite`` of a score, or of each member score of an ensemble (a dict)."""
    return {name: _finite(v) for name, v in value.items()} if isinstance(value, dict) else _finite(value)


def _jsonable(candidate):
    """The form a candidate takes after a JSON round trip (tuples become lists)."""
    return list(candidate) if isinstance(candidate, tuple) else candidate


def _best_text(best: dict | None) -> str:
    return "-" if best is None else f"{best['score']:.2f} ({best['arch']})"[:60]
