"""The shortlist stage: the top k candidates of a search trained briefly, the best by a validation metric wins.

After scoring, ``Shortlist(k=5, epochs=1, metric="val_acc")`` trains the k best-scored (distinct) candidates with
a normal Lightning Trainer on the search's DataModule, each for the short budget, and reads ``metric`` from the
Trainer's ``callback_metrics``; the best by it (``mode``) goes to the final training instead of the training-free
pick. ``halving=True`` runs successive halving: the k candidates with the budget, then the better half with twice
the budget, ... until one is left (each round trains from scratch).

Every short fit is one record of ``shortlist.jsonl`` in the results directory (round, candidate, budget, metric
value, seconds, error): appended and fsynced one by one (a kill loses at most the fit in progress; a torn last
line is cut off), written under the directory's lock (one writer), and resumed: a rerun trains only the missing
ones. Each record carries the ``shortlist_id`` of what determines it (the scores' configuration, the shortlist's
settings, the module that trains): records of another one are moved to ``previous/N/`` and never reused.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import numbers
import os
import random
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterator, Literal, Mapping

import numpy as np

from .._seeding import seeded
from .lock import DirectoryLock
from .store import (
    CONFIG,
    PREVIOUS,
    SUMMARY,
    ConfigMismatchError,
    _read_json_file,
    _why,
    _write_all,
    config_id,
    finite_json,
    write_json_atomic,
)

SHORTLIST = "shortlist.jsonl"
MODES = ("max", "min")
# Trainer settings of every short fit unless ``trainer`` overrides them: quiet, nothing written.
QUIET_TRAINER = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                 "enable_model_summary": False}


@dataclass(frozen=True)
class Shortlist:
    """The shortlist stage's settings (``ArchitectureSearch(shortlist=...)``; YAML ``search.shortlist: {k: 5}``).

    Attributes:
        k: candidates trained briefly, the k best-scored distinct ones. 0 (default) and 1: no stage (with one
            candidate there is nothing to compare: the training-free pick goes to the final training untrained).
            More than the scored candidates: all of them, with a note.
        epochs: the short budget in epochs (``Trainer(max_epochs=...)``), or None when ``steps`` is given.
        steps: the short budget in optimiser steps (``Trainer(max_steps=...)``) instead of epochs.
        metric: what compares them, as the module logs it (``val_acc``: ``CandidateModule``'s validation accuracy;
            the DataModule needs a validation set).
        mode: ``max`` (accuracy) or ``min`` (a loss).
        halving: successive halving: the k candidates with the budget, then the better half (rounded up) with
            twice the budget, ... until one is left.
        trainer: extra ``lightning.Trainer`` arguments of every short fit (e.g. ``{"limit_train_batches": 20}``);
            by default quiet (no logger, checkpoints, progress bar or model summary) and on the search's
            accelerator.
    """

    k: int = 0
    epochs: int | None = 1
    steps: int | None = None
    metric: str = "val_acc"
    mode: Literal["max", "min"] = "max"
    halving: bool = False
    trainer: dict | None = None

    def __post_init__(self):
        for name in ("k", "epochs", "steps"):
            value = getattr(self, name)
            low = 0 if name == "k" else 1
            if value is None and name != "k":
                continue
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"shortlist.{name} must be an int >= {low}"
                                 + (" (0: no shortlist stage)" if name == "k" else " or None") + f", got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.steps is not None and self.epochs is not None:
            object.__setattr__(self, "epochs", None)  # steps given: they are the budget (epochs' default is 1)
        if self.epochs is None and self.steps is None:
            raise ValueError("shortlist needs a budget: epochs (an int >= 1) or steps (an int >= 1)")
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(f"shortlist.metric must be the name of a logged metric (e.g. 'val_acc'), got "
                             f"{self.metric!r}")
        if self.mode not in MODES:
            raise ValueError(f"shortlist.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.halving, bool):
            raise ValueError(f"shortlist.halving must be true or false, got {self.halving!r}")
        if self.trainer is not None and not isinstance(self.trainer, Mapping):
            raise ValueError(f"shortlist.trainer must be a dict of lightning.Trainer arguments, got {self.trainer!r}")
        for key in ("max_epochs", "max_steps"):
            if key in (self.trainer or {}):
                raise ValueError(f"shortlist.trainer must not set {key}: the budget is shortlist.epochs or "
                                 "shortlist.steps")
        object.__setattr__(self, "trainer", dict(self.trainer or {}))

    @classmethod
    def of(cls, value: "Shortlist | Mapping | int | None") -> "Shortlist":
        """A ``Shortlist`` from a ``Shortlist``, a dict (``{"k": 5, "epochs": 2}``), an int k, or None (off)."""
        if value is None:
            return cls()
        if isinstance(value, Shortlist):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise ValueError(f"unknown shortlist key(s) {sorted(unknown)}; accepted: "
                                 f"{', '.join(f.name for f in dataclasses.fields(cls))}")
            return cls(**value)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return cls(k=int(value))
        raise TypeError(f"shortlist must be a Shortlist, a dict (k, epochs, steps, metric, mode, halving, trainer), "
                        f"an int k or None, got {value!r}")

    @property
    def enabled(self) -> bool:
        return self.k >= 2

    def budget(self, round_: int) -> dict:
        """The budget of round ``round_`` (doubled each round of successive halving)."""
        factor = 2 ** round_
        return {"epochs": self.epochs * factor} if self.steps is None else {"steps": self.steps * factor}


def shortlisted(records: list[dict], k: int) -> list[dict]:
    """The ``k`` best-scored distinct candidates (each by its best record; ties: the earliest trial)."""
    best: dict[str, dict] = {}
    for record in records:
        if record.get("score") is None:
            continue
        key = json.dumps(record["candidate"], sort_keys=True, default=str)
        if key not in best or (record["score"], -record["trial"]) > (best[key]["score"], -best[key]["trial"]):
            best[key] = record
    return sorted(best.values(), key=lambda r: (-r["score"], r["trial"]))[:k]


def shortlist_id(search_config: dict, shortlist: Shortlist, module_options: dict, accelerator: str = "auto") -> str:
    """The id of what determines a short fit's value: the scores' configuration (its ``config_id``: which
    candidates are shortlisted), the shortlist's settings, the module that trains and its options, and the
    accelerator the fits run on (unless ``shortlist.trainer`` names one)."""
    part = {"scores": config_id(search_config), "data": search_config.get("data"), "accelerator": accelerator,
            "build_options": search_config.get("build_options"), "num_classes": search_config.get("num_classes"),
            "shortlist": dataclasses.asdict(shortlist), "module": module_options}
    text = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ShortlistStore:
    """``shortlist.jsonl``: one record per short fit, keyed by ``(round, candidate)``; the caller holds the
    directory's lock. Records of another ``shortlist_id`` are moved to ``previous/N/`` on open."""

    def __init__(self, directory: Path, ident: str):
        self.directory, self.ident = Path(directory), ident
        self.path = self.directory / SHORTLIST
        self.records: dict[tuple[int, str], dict] = {}
        self.moved: Path | None = None
        self._load()

    @staticmethod
    def key(round_: int, candidate: Hashable) -> tuple[int, str]:
        return round_, json.dumps(candidate, sort_keys=True, default=str)

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a torn last line from a kill: cut it off
            data = data[: data.rfind(b"\n") + 1]
            os.truncate(self.path, len(data))
        records = []
        for number, raw in enumerate(data.split(b"\n")[:-1], start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                if not isinstance(record, dict) or "round" not in record or "candidate" not in record:
                    raise ValueError("not a short-fit record")
            except ValueError as err:
                raise ValueError(f"{self.path}:{number} is not a short-fit record ({err}): {raw[:200]!r}. Delete "
                                 "that line (its candidate is trained again) and run the same command again.") from None
            records.append(record)
        if any(r.get("shortlist_id") != self.ident for r in records):
            self._move_aside()
            return
        for record in records:
            self.records[self.key(record["round"], record["candidate"])] = record

    def _move_aside(self) -> None:
        """Another shortlist configuration's records: to ``previous/N/shortlist.jsonl`` (nothing is deleted)."""
        root = self.directory / PREVIOUS
        root.mkdir(exist_ok=True)
        taken = {int(p.name) for p in root.iterdir() if p.name.isdigit()}
        target = root / str(max(taken, default=0) + 1)
        target.mkdir()
        os.replace(self.path, target / SHORTLIST)
        self.moved = target

    def get(self, round_: int, candidate: Hashable) -> dict | None:
        return self.records.get(self.key(round_, candidate))

    def append(self, record: dict) -> None:
        """Append one record and fsync it (a short fit takes seconds at least: one fsync each is free)."""
        record = dict(record, shortlist_id=self.ident)
        line = (json.dumps(finite_json(record), sort_keys=True, allow_nan=False) + "\n").encode()
        try:
            with open(self.path, "ab", buffering=0) as f:
                size = f.seek(0, os.SEEK_END)
                try:
                    _write_all(f, line)
                    os.fsync(f.fileno())
                except OSError:
                    os.truncate(self.path, size)
                    raise
        except OSError as err:
            raise OSError(err.errno, f"could not append a short fit to {self.path}: {_why(err)}; the records already "
                                     "there are intact: fix it and run the same command again to resume") from err
        self.records[self.key(record["round"], record["candidate"])] = record


@contextlib.contextmanager
def _own_rng(seed: int, device: str) -> Iterator[None]:
    """Seed python, numpy and torch for one short fit and restore every global state afterwards (the final
    training is not moved by the stage)."""
    py, np_state = random.getstate(), np.random.get_state()
    try:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        with seeded(seed, device):
            yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)


def short_fit(search, datamodule, candidate: Hashable, budget: dict, seed: int, module_options: dict) -> dict:
    """Train ``candidate`` for ``budget`` with a fresh Trainer; the record (the metric's value, or the error)."""
    import lightning as L

    from ..module import fit_and_test

    shortlist: Shortlist = search.shortlist
    record: dict[str, Any] = {"candidate": candidate, "arch": search.describe(candidate), "budget": budget,
                              "metric": shortlist.metric, "value": None, "error": None, "seed": seed}
    start = time.perf_counter()
    try:
        options = {**QUIET_TRAINER, "accelerator": search.accelerator, "devices": 1, **shortlist.trainer}
        if "epochs" in budget:
            options.update(max_epochs=budget["epochs"])
        else:
            # validated once, when the budget ends (mid-epoch: an epoch-end validation would never come)
            options.update(max_steps=budget["steps"], max_epochs=-1, check_val_every_n_epoch=None,
                           val_check_interval=budget["steps"])
        trainer = L.Trainer(**options)
        device = "cuda" if trainer.strategy.root_device.type == "cuda" else "cpu"
        with _own_rng(seed, device):
            fit_and_test(trainer, datamodule, candidate, space=search.space,
                         num_classes=search.num_classes or datamodule.num_classes,
                         build_options=search.build_options_for(datamodule), test=False, **module_options)
        metrics = trainer.callback_metrics
        if shortlist.metric not in metrics:
            logged = ", ".join(sorted(metrics)) or "nothing"
            raise ValueError(f"the short fit logged no {shortlist.metric!r} (logged: {logged}); set shortlist.metric "
                          "to one of them, or give the DataModule a validation "
                          "set (val_fraction) so that val_acc is logged")
        value = float(metrics[shortlist.metric])
        record["value"] = value if math.isfinite(value) else None
        if record["value"] is None:
            record["error"] = f"{shortlist.metric} is {value}"
    except Exception as err:  # a failed short fit is recorded and the stage goes on
        record["error"] = f"{type(err).__name__}: {err}"
        record["traceback"] = traceback.format_exc(limit=-3)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def run_shortlist(search, datamodule, records: list[dict], module_options: dict,
                  report=None) -> dict | None:
    """The shortlist stage of ``search`` over its scored ``records``; returns the stage's result (winner,
    rounds, seconds) or None when the stage is off. ``report(text)`` tells the user what happens."""
    shortlist: Shortlist = search.shortlist
    report = report or (lambda text: None)
    if not shortlist.enabled:
        return None
    candidates = shortlisted(records, shortlist.k)
    if not candidates:
        raise RuntimeError("no candidate to shortlist: the search scored none")
    notes = []
    if len(candidates) < shortlist.k:
        notes.append(f"shortlist.k={shortlist.k} but the search scored {len(candidates)} distinct candidate(s): "
                     "all of them are trained briefly")
        report(notes[-1])
    config = json.loads(json.dumps(search.config(datamodule), default=str))  # (as config.json holds it)
    ident = shortlist_id(config, shortlist, module_options, search.accelerator)
    directory = Path(search.results_dir) if search.results_dir else None
    lock = DirectoryLock(directory) if directory is not None else contextlib.nullcontext()
    start = time.perf_counter()
    with lock:
        store = None
        if directory is not None:
            current = _read_json_file(directory / CONFIG, "it is ignored")
            if current is not None and current != config:
                raise ConfigMismatchError(f"{directory} holds another configuration than this search's ({CONFIG} "
                                          "changed): the shortlist stage does not write into it")
            store = ShortlistStore(directory, ident)
            if store.moved is not None:
                notes.append(f"the shortlist configuration changed: the earlier short fits were moved to "
                             f"{store.moved}/")
                report(notes[-1])
        rounds, pool, round_, winner = [], candidates, 0, None
        while True:
            budget = shortlist.budget(round_)
            results = []
            for rank, scored in enumerate(pool):
                done = store.get(round_, scored["candidate"]) if store is not None else None
                if done is None:
                    report(f"short fit {rank + 1}/{len(pool)} (round {round_ + 1}, {_words(budget)}): {scored['arch']}")
                    done = dict(short_fit(search, datamodule, scored["candidate"], budget,
                                          search.candidate_seed(scored["trial"]), module_options),
                                round=round_, trial=scored["trial"], score=scored["score"])
                    if store is not None:
                        store.append(done)
                    what = (f"{shortlist.metric} {done['value']:.4f}" if done["error"] is None
                            else f"failed: {done['error'][:200]}")
                    report(f"  {scored['arch']}: {what} ({done['seconds']:.1f} s)")
                results.append(done)
            rounds.append(results)
            ok = [r for r in results if r["error"] is None]
            ranked = sorted(ok, key=lambda r: (-r["value"] if shortlist.mode == "max" else r["value"]))
            winner = ranked[0] if ranked else winner  # (a round whose fits all failed: the previous round's best)
            if not shortlist.halving or len(ranked) <= 2:  # (of two, the better one wins: no further round)
                break
            by_key = {ShortlistStore.key(0, r["candidate"]): r for r in pool}
            pool = [by_key[ShortlistStore.key(0, r["candidate"])] for r in ranked[:math.ceil(len(ranked) / 2)]]
            round_ += 1
        if winner is None:
            notes.append(f"every short fit failed (e.g. {results[0]['error'][:200]}): the training-free pick goes "
                         "on")
            report(notes[-1])
            warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)
        result = _result(shortlist, winner or candidates[0], winner, candidates, rounds, start, ident, notes)
        if directory is not None:
            summary = _read_json_file(directory / SUMMARY, "it is rebuilt") or {}
            summary["shortlist"] = result
            write_json_atomic(directory / SUMMARY, finite_json(summary))
    return result


def _result(shortlist, pick, winner, candidates, rounds, start, ident, notes) -> dict:
    return {"winner": {"candidate": pick["candidate"], "arch": pick["arch"],
                       "value": None if winner is None else winner["value"]},
            "metric": shortlist.metric, "mode": shortlist.mode, "k": shortlist.k, "trained": len(candidates),
            "rounds": [[{k: r.get(k) for k in ("candidate", "arch", "value", "error", "seconds")} for r in results]
                       for results in rounds],
            "seconds": round(time.perf_counter() - start, 3),
            "fit_seconds_total": round(sum(r["seconds"] for results in rounds for r in results), 3),
            "shortlist_id": ident, "notes": notes}


def _words(budget: dict) -> str:
    (unit, value), = budget.items()
    return f"{value} {unit[:-1] if value == 1 else unit}"
