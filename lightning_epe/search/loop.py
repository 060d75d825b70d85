"""One run of an :class:`ArchitectureSearch`, in the shape of Lightning's loops.

``on_run_start`` (processes, store, strategy, batches) -> repeated ``advance`` (ask a round of
candidates, score this process's share, gather every process's records) and ``on_advance_end``
(persist, tell the strategy, progress, loggers) -> ``on_run_end`` (summary, leaderboard, loggers). The state of the
run lives on the loop object; a search without a results directory keeps its records in a
:class:`MemoryStore`, so the steps do not branch on it.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any, Hashable, Protocol

import numpy as np
import torch

from ..spaces.base import Builder
from .batches import ScoringBatches
from .distributed import Workers
from .loggers import SearchLogging, as_loggers
from .progress import console, leaderboard, report_failure, search_progress
from .store import MemoryStore, ResultsStore, best_record
from .strategies import describe_strategy, make_strategy


class SearchSettings(Protocol):
    """What the loop reads of the search that runs it (an :class:`~lightning_epe.search.ArchitectureSearch`):
    its settings, and the steps it delegates (``config``, ``build_options_for``, ``score_candidate``, ``rank``).
    The loop does not import the search, which imports the loop."""

    space: Any
    search_strategy: Any
    budget: int | None
    seed: int
    batch_policy: str
    batch_size: int | None
    accelerator: str
    devices: int | str
    num_nodes: int
    strategy: str
    num_classes: int | None
    results_dir: str | None
    force: bool
    progress: bool
    logger: Any
    draws: Any
    score_label: str
    relative: bool

    def config(self, datamodule=None) -> dict: ...

    def build_options_for(self, datamodule) -> dict: ...

    def score_candidate(self, candidate: Hashable, trial: int, batches: ScoringBatches, builder: Builder) -> dict: ...

    def rank(self, records: list[dict]) -> None: ...


@dataclasses.dataclass
class SearchResult:
    """Every record of a search (in trial order) and the best one (None if none scored)."""

    records: list[dict]
    best: dict | None

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.records if r.get("error") is not None]


class SearchLoop:
    """Runs ``search`` over ``datamodule`` once: ``run()`` returns the :class:`SearchResult`."""

    def __init__(self, search: SearchSettings, datamodule, files: dict[str, str] | None = None):
        self.search, self.datamodule = search, datamodule
        self.files = dict(files or {})  # extra files for the results directory (the CLI's config.yaml)
        self.records: list[dict] = []  # in trial order: replayed and newly scored
        self.round: list[tuple[int, Hashable]] = []  # (trial, candidate) pairs of the current round
        self.gathered: list[dict] = []  # the current round's records, from every process
        self.best: dict | None = None
        self.done = False
        self.store: MemoryStore | None = None
        self.builder: Builder | None = None
        self.logging = SearchLogging([])

    def run(self) -> SearchResult:
        try:
            self.on_run_start()
            with search_progress(self.total, len(self.replayed_trials), enabled=self.reporting,
                                 draws=self.search.draws.k) as self.update_progress:
                while not self.done:
                    self.advance()
                    if not self.done:
                        self.on_advance_end()
            return self.on_run_end()
        except KeyboardInterrupt:
            if self.store is not None and self.store.path is not None and self.workers.is_main:  # (else: nothing yet)
                console.print(f"[yellow]Interrupted. {len(self.store)} records are safe in {self.store.path}; "
                              "run the same command again to resume.")
            raise
        finally:
            if self.builder is not None:
                self.builder.close()
            if self.store is not None:
                self.store.close()  # the directory's lock

    # ------------------------------------------------------------------------------------ steps
    def on_run_start(self) -> None:
        """Every check first (directory, lock, configuration, strategy, data, replay); only then is
        anything written (``store.commit``: config.json, and the old records moved aside under force)."""
        search, datamodule = self.search, self.datamodule
        self.workers = Workers(search.accelerator, search.devices, search.num_nodes, search.strategy)
        self.num_classes = search.num_classes or getattr(datamodule, "num_classes", None)
        if not self.num_classes:
            raise ValueError("num_classes is unknown: pass num_classes= (--search.num_classes) or use a datamodule "
                             "with a num_classes attribute")
        self.store = (ResultsStore(search.results_dir, writer=self.workers.is_main) if search.results_dir
                      else MemoryStore())
        self.store.check_config(search.config(datamodule), force=search.force)
        self.strategy = make_strategy(search.search_strategy, search.space, search.budget, search.seed)
        self.strategy_name = describe_strategy(search.search_strategy)[0]
        self.total = search.budget if search.budget is not None else len(search.space)  # the loop enforces it
        self.workers.prepare_data(datamodule)
        self.batches = ScoringBatches(datamodule, search.batch_size, search.batch_policy, search.seed,
                                      self.workers.device, num_classes=self.num_classes)
        self.builder = search.space.builder(self.workers.device, self.num_classes,
                                            **search.build_options_for(datamodule))
        if self.store.plan == "continue":
            self.store.keep_records(self._replays())
            self.strategy = make_strategy(search.search_strategy, search.space, search.budget, search.seed)  # afresh
        message = self.store.commit(self.files)
        if message and self.workers.is_main:
            console.print(f"[yellow]{message}", soft_wrap=True)
        if self.store.plan == "archive":  # every process starts afresh
            self.store.records.clear()
        self.replayed_trials = {t for t in range(self.total) if t in self.store}
        self.best = best_record(self.store.records.values())
        if self.workers.is_main:
            self.logging = SearchLogging(as_loggers(search.logger), search.score_label)
        self.started = time.perf_counter()

    def advance(self) -> None:
        """Ask a round (one candidate per process), score this process's share, gather the records."""
        self.round = self._ask_round(self.strategy, len(self.records), warn=self.workers.is_main)
        if not self.round:
            if not self.records:
                raise RuntimeError(f"search strategy {self.strategy_name!r} proposed no candidate (its first ask() "
                                   "returned None): nothing to score. A strategy's ask() returns a candidate of the "
                                   "space until the budget is spent (see the Strategy protocol)")
            self.done = True
            return
        rank, world = self.workers.rank, self.workers.world_size
        mine = [self._stored(trial, candidate)
                or self.search.score_candidate(candidate, trial, self.batches, self.builder)
                for trial, candidate in self.round[rank::world]]
        self.gathered = sorted(self.workers.gather(mine), key=lambda r: r["trial"])

    def on_advance_end(self) -> None:
        """Persist the newly scored records, tell the strategy their scores, advance the progress bar, log
        the round's records (replayed ones too: the logger gets the whole search)."""
        self.records.extend(self.gathered)
        if self.search.relative:  # provisional ranks among the candidates so far
            self.search.rank(self.records)
            self.best = best_record(self.records)
        for record in self.gathered:
            self.logging.log_record(record)
            if record["trial"] in self.store:  # replayed from the results directory
                continue
            self.store.append(record)
            if record["error"] is not None and self.reporting:  # said when it fails, not only in the footer
                report_failure(record)
            self.best = best_record([self.best, record] if self.best else [record])
            self.update_progress(_best_text(self.best))
        for (_, candidate), record in zip(self.round, self.records[-len(self.round):]):
            self.strategy.tell(candidate, record["score"])

    def on_run_end(self) -> SearchResult:
        best = best_record(self.records)
        result = SearchResult(self.records, best)
        if self.workers.is_main:
            summary = self._write_summary(best, time.perf_counter() - self.started)
            if self.search.progress:
                console.print(leaderboard(self.records))
            self.logging.log_end(self.records, self.search.config(self.datamodule), summary)
        if best is None and self.records:
            where = f" in {self.store.path}" if self.store.path is not None else ""
            raise RuntimeError(f"none of the {len(self.records)} candidates got a score (all failed or NaN); "
                               f"see the errors{where}")
        return result

    # ---------------------------------------------------------------------------------- helpers
    @property
    def reporting(self) -> bool:
        return self.search.progress and self.workers.is_main

    def _ask_round(self, strategy, first: int, warn: bool = False) -> list[tuple[int, Hashable]]:
        """Up to one (trial, candidate) pair per process, from trial ``first``; never past the budget, whatever
        the strategy proposes (``warn``: say so when it proposes more)."""
        round_: list[tuple[int, Hashable]] = []
        while len(round_) < self.workers.world_size and first + len(round_) < self.total:
            trial = first + len(round_)
            candidate = checked_candidate(strategy.ask(), self.strategy_name, trial)
            if candidate is None:
                break
            round_.append((trial, candidate))
        if not round_ and first >= self.total and warn and strategy.ask() is not None:
            warnings.warn(f"search strategy {self.strategy_name!r} keeps proposing candidates after the budget of "
                          f"{self.total}: the search stops at the budget (a strategy's ask() returns None once "
                          "budget candidates were asked)", RuntimeWarning, stacklevel=2)
        return round_

    def _replays(self) -> bool:
        """Would this search propose, at every stored trial, the candidate stored there? (A dry run of
        the replay: a fresh strategy told the stored scores round by round, as ``advance`` does.)"""
        strategy = make_strategy(self.search.search_strategy, self.search.space, self.search.budget,
                                 self.search.seed)
        records: list[dict] = []
        while True:
            round_ = self._ask_round(strategy, len(records))
            stored = [self.store.records.get(trial) for trial, _ in round_]
            if not round_ or any(r is None for r in stored):
                return True  # the rest is scored anew
            if any(r["candidate"] != _jsonable(c) for r, (_, c) in zip(stored, round_)):
                return False
            records.extend(dict(r) for r in stored)
            if self.search.relative:
                self.search.rank(records)
            for (_, candidate), record in zip(round_, records[-len(round_):]):
                strategy.tell(candidate, record["score"])

    def _stored(self, trial: int, candidate: Hashable) -> dict | None:
        stored = self.store.records.get(trial)
        if stored is not None and stored["candidate"] != _jsonable(candidate):
            line = getattr(self.store, "line_of", {}).get(trial)
            raise RuntimeError(
                f"trial {trial} in {self.store.path}{f':{line}' if line else ''} scored {stored['candidate']!r} but "
                f"this search proposes {candidate!r}: the results directory belongs to another search"
            )
        return stored

    def _write_summary(self, best: dict | None, seconds: float) -> dict:
        summary = self.store.read_summary()
        summary.update({
            "best": None if best is None else {k: best[k] for k in ("trial", "candidate", "arch", "score")},
            "scored": sum(r["score"] is not None for r in self.records),
            "nan": sum(r["score"] is None and r["error"] is None for r in self.records),
            "failed": sum(r["error"] is not None for r in self.records),
            "score_seconds_total": round(sum(r["seconds"] for r in self.records), 3),
            "last_run_seconds": round(seconds, 3),
            "seed": self.search.seed,
            "torch_threads": torch.get_num_threads(),  # scores repeat bit for bit on the same machine and threads
            "scoring_batch_size": self.batches.batch_size,  # (the data's size when batch_size asks for more)
        })
        self.store.write_summary(summary)
        return summary


def checked_candidate(candidate, strategy: str, trial: int):
    """A proposed candidate in its JSON form's terms: numpy scalars (and 0-d arrays or tensors) become Python
    numbers, inside tuples and lists too; None is None (the strategy is done). Anything that is not JSON-able
    (an object, a dict, a set, a NaN) is refused before it is scored, naming the strategy."""
    if candidate is None:
        return None
    plain = _plain(candidate)
    if plain is _REFUSED:
        raise TypeError(f"search strategy {strategy!r} proposed {candidate!r:.120} (a {type(candidate).__name__}) "
                        f"at trial {trial}: a candidate must be JSON-able: an int, a str, a finite float, a bool, or "
                        "a tuple or list of them (numpy scalars are converted); it was refused before scoring")
    return plain


_REFUSED = object()


def _plain(value):
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        value = value.item()
    elif isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_complex():
        value = value.item()
    if isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_plain(v) for v in value]
        return _REFUSED if any(v is _REFUSED for v in items) else type(value)(items)
    return _REFUSED


def _jsonable(candidate):
    """The form a candidate takes after a JSON round trip (tuples become lists)."""
    return list(candidate) if isinstance(candidate, tuple) else candidate


def _best_text(best: dict | None) -> str:
    return "-" if best is None else f"{best['score']:.2f} ({best['arch']})"[:60]
