"""The results directory: append-only score records, the effective config, a summary.

Layout of a results directory::

    config.json     the effective configuration of the run (resume refuses a different one)
    scores.jsonl    one JSON record per scored candidate, appended one by one
    summary.json    the best candidate, counts, timings; test metrics after training
    lock            while a search writes: its pid and host (one writer per directory)
    previous/N/     the files of an earlier configuration, moved aside by ``force=True``

Each record reaches the operating system before the next candidate starts, so a process killed at
any moment loses at most the candidate in progress; ``scores.jsonl`` is fsynced at most
:data:`SYNC_SECONDS` after a record and when the search ends, so a power loss or an operating-system
crash loses at most that long's records (an fsync per record cost 0.4 ms, a sixth of an NB201
candidate's build). A process killed while appending leaves at most one torn last line: it is cut off on the
next open, never fatal. Files other than ``scores.jsonl`` are replaced atomically (write + rename).

Every record carries the ``config_id`` of the configuration that scored it (a hash of what
determines its value: :data:`SCORING_KEYS`), so a directory never mixes records of two
configurations: a resume with another one is refused, or (``force=True``) the old records are
moved to ``previous/N/`` and the search starts a fresh ``scores.jsonl``.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import numbers
import os
import time
import warnings
from pathlib import Path
from typing import Any, Iterable

from .lock import DirectoryLock

SYNC_SECONDS = 1.0  # the longest a record waits for its fsync (0: every record)
SCORES = "scores.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
PREVIOUS = "previous"
MOVED_BY_FORCE = (SCORES, CONFIG, SUMMARY, "config.yaml", "shortlist.jsonl")  # scores first: see ResultsStore._archive

# What a record's value depends on (besides its trial and candidate): records agree on these or
# are not comparable. The strategy, its options and the budget only choose which candidates are
# scored, so changing them (force=True) keeps the records.
SCORING_KEYS = ("space", "score", "score_options", "output", "batch_policy", "batch_size", "num_classes",
                "build_options", "data", "draws", "seed")


class ConfigMismatchError(RuntimeError):
    """An existing results directory was written by a different configuration."""


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str):
    """``json.loads``'s ``parse_constant``: the bare tokens NaN, Infinity and -Infinity are not JSON."""
    raise _NonFinite(name)


def finite_json(value):
    """``value`` with every non-finite float (NaN, inf) replaced by None, in nested dicts and lists: JSON has no
    such numbers (a summary with a NaN test metric is written with null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def _json_safe(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def _why(err: OSError) -> str:
    """What went wrong, in words (the file is named by the caller)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full (or over quota)"
    if err.strerror:
        return err.strerror + (f" ({err.filename})" if err.filename else "")
    return str(err)


def config_id(config: dict) -> str:
    """The id of the scoring part of ``config`` (:data:`SCORING_KEYS`; keys absent or None are left out,
    so an option added later with a None default does not change the id of older directories)."""
    part = {key: config[key] for key in SCORING_KEYS if config.get(key) is not None}
    text = json.dumps(part, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def resolve_results_dir(value) -> Path | None:
    """``results_dir`` as a path (``~`` expanded), or None for no directory; '' and non-paths are refused."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"results_dir (--results_dir) must be a directory path or None, got {value!r}")
    text = os.fspath(value)
    if not text.strip():
        raise ValueError("results_dir (--results_dir) must be a directory path, got an empty string; leave it "
                         "out (None) to keep the records in memory only")
    return Path(os.path.expanduser(text))


def _check_links(directory: Path) -> None:
    """A results directory that is a dangling symbolic link or a loop of links, in words (mkdir said "File
    exists" or "Too many levels of symbolic links")."""
    try:
        os.stat(directory)
    except OSError as err:
        fix = "choose another directory (results_dir=, --results_dir)"
        if err.errno == errno.ELOOP:
            raise OSError(err.errno, f"results directory {str(directory)!r} is a loop of symbolic links (one of "
                                     f"its links points back to itself); replace the link by a directory, or {fix}"
                          ) from err
        if err.errno == errno.ENOENT and os.path.islink(directory):
            raise OSError(err.errno, f"results directory {str(directory)!r} is a symbolic link to "
                                     f"{os.readlink(directory)!r}, which does not exist (a dangling link); create "
                                     f"that directory, remove the link, or {fix}") from err


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a failure (disk full ...) leaves the old file intact."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise OSError(err.errno, f"could not write {path}: {_why(err)}; the previous version of the file "
                                 "is intact") from err


def _write_all(file, data: bytes) -> None:
    """All of ``data`` to an unbuffered file (one raw write may take only part of it)."""
    view = memoryview(data)
    while view:
        view = view[file.write(view):]


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _read_json_file(path: Path, what: str) -> dict | None:
    """A JSON object file, or None when it is missing; a damaged one (empty, not JSON, not an
    object) is ignored with a warning naming it."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return data
    except (ValueError, UnicodeDecodeError) as err:
        warnings.warn(f"{path} is damaged ({_short(err)}); {what}", RuntimeWarning, stacklevel=3)
        return None


def _short(err: Exception) -> str:
    return "empty" if isinstance(err, json.JSONDecodeError) and not err.doc.strip() else str(err)


class MemoryStore:
    """The records of a search without a results directory: kept in memory, keyed by ``trial``.

    The search loop talks to a store the same way with or without a directory.
    """

    path: Path | None = None
    directory: Path | None = None

    def __init__(self):
        self.records: dict[int, dict] = {}
        self._summary: dict = {}
        self.config_id: str | None = None
        self.plan = "new"

    def check_config(self, config: dict, force: bool = False) -> None:
        self.config_id = config_id(config)

    def keep_records(self, keep: bool) -> None:
        pass

    def commit(self, files: dict[str, str] | None = None) -> str | None:
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def append(self, record: dict) -> None:
        if self.config_id is not None:
            record.setdefault("config_id", self.config_id)
        self.records[int(record["trial"])] = record

    def __contains__(self, trial: int) -> bool:
        return trial in self.records

    def __len__(self) -> int:
        return len(self.records)

    def ordered(self) -> list[dict]:
        return [self.records[t] for t in sorted(self.records)]

    def write_summary(self, summary: dict) -> None:
        self._summary = dict(summary)

    def read_summary(self) -> dict:
        return dict(self._summary)


def upgrade_config(config: dict) -> dict:
    """A ``config.json`` of lightning-epe 0.1 in today's form (so its results directories still resume):
    ``population``/``sample_size`` became the evolution strategy's ``strategy_options``."""
    if "population" not in config:
        return config
    config = dict(config)
    options = {"population": config.pop("population"), "sample_size": config.pop("sample_size", None)}
    config["strategy_options"] = options if config.get("strategy") == "evolution" else {}
    return config


class ResultsStore(MemoryStore):
    """Append-only records of one search in a results directory, keyed by ``trial`` (the draw number).

    The writer holds the directory's lock (:class:`DirectoryLock`) from the start until
    :meth:`close`. ``writer=False`` (the other processes of a distributed search) reads the
    directory and keeps records in memory, but writes nothing and takes no lock.

    The steps of a run: ``ResultsStore(dir)`` (writable? lock; every record checked),
    :meth:`check_config` (may refuse; writes nothing), :meth:`commit` once every other check has
    passed (moves an old configuration's files aside when ``force`` asks for it, writes
    ``config.json``), then :meth:`append` per record and :meth:`write_summary`.
    """

    def __init__(self, directory: str | os.PathLike, writer: bool = True):
        super().__init__()
        self.directory = resolve_results_dir(directory)
        if self.directory is None:
            raise ValueError("ResultsStore needs a directory")
        self.writer = writer
        self.path = self.directory / SCORES
        self.lock = DirectoryLock(self.directory)
        self._config: dict | None = None
        self._archive_reason = ""
        self._rewrite_config = True
        self.fresh_summary = False
        self.line_of: dict[int, int] = {}  # trial -> its line in scores.jsonl (for messages)
        self._file = None  # scores.jsonl, open for appending from the first record to close()
        self._size = 0  # its length after the last whole record
        self._synced = 0.0
        if writer:
            self._check_writable()
            self.lock.acquire()
            if self.lock.taken_over:
                warnings.warn(f"took over the lock of {self.directory} left by pid {self.lock.taken_over.get('pid')} "
                              f"on host {self.lock.taken_over.get('host')}, which no longer holds it (killed)",
                              RuntimeWarning, stacklevel=2)
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """fsync and close ``scores.jsonl``, release the directory's lock (idempotent)."""
        try:
            self._close_file()
        finally:
            self.lock.release()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _check_writable(self) -> None:
        _check_links(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise OSError(
                err.errno, f"results directory {str(self.directory)!r} is not writable ({_why(err)}); choose "
                "another directory (results_dir=, --results_dir) or make this one writable"
            ) from err

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # torn last line from a kill: cut it off
            data = data[: data.rfind(b"\n") + 1]
            if self.writer:
                with open(self.path, "r+b") as f:
                    f.truncate(len(data))
        for number, raw in enumerate(data.split(b"\n")[:-1], start=1):
            if not raw.strip():
                continue
            record = self._parse(raw, number)
            trial = record["trial"]
            if trial in self.records:  # the same line twice (a crash between write and flush) is harmless
                if record != self.records[trial]:
                    first = self.line_of[trial]
                    raise ValueError(
                        f"{self.path}:{number} is a second, different record of trial {trial} (the first is on "
                        f"line {first}): which one holds the trial's result is unknown. Delete one of the two lines "
                        f"(delete both to score trial {trial} again), then run the same command again.")
                continue
            self.records[trial] = record
            self.line_of[trial] = number

    def _parse(self, raw: bytes, number: int) -> dict:
        """One line of ``scores.jsonl`` as a record; a damaged one is refused with file:line and the fix."""
        def refuse(what: str) -> ValueError:
            return ValueError(
                f"{self.path}:{number} is not a score record ({what}): {raw[:200]!r}. The other records are "
                f"intact; delete that line (its trial is scored again) or restore it, then run the same "
                "command again."
            )

        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise refuse(f"not UTF-8 text: byte {raw[err.start]:#04x} at column {err.start + 1}") from None
        try:
            record = json.loads(line, parse_constant=_refuse_constant)
        except _NonFinite as err:
            raise refuse(f"{err} is not a JSON number (the library writes null for NaN and infinite values)") from None
        except ValueError as err:
            raise refuse(f"not JSON: {err}") from None
        if not isinstance(record, dict):
            raise refuse(f"a JSON {type(record).__name__}, not an object")
        trial = record.get("trial")
        if isinstance(trial, bool) or not isinstance(trial, int) or trial < 0:
            raise refuse(f"'trial' must be an int >= 0, got {trial!r}" if "trial" in record else "no 'trial'")
        if "candidate" not in record:
            raise refuse("no 'candidate'")
        score = record.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, numbers.Real)):
            raise refuse(f"'score' must be a number or null, got {score!r}")
        if record["candidate"] is None or isinstance(record["candidate"], dict):
            raise refuse(f"'candidate' must be an int, a str or a list, got {record['candidate']!r}")
        for key in ("error", "arch", "config_id", "reason", "context", "traceback"):
            if record.get(key) is not None and not isinstance(record[key], str):
                raise refuse(f"{key!r} must be a string or null, got {record[key]!r}")
        seconds = record.get("seconds")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, numbers.Real)):
            raise refuse(f"'seconds' must be a number, got {seconds!r}")
        if record.get("error") is not None and score is not None:
            raise refuse(f"it has both an 'error' and a 'score' ({score!r}): a failed record has score null")
        record.setdefault("score", None)
        record.setdefault("error", None)
        if record.get("seconds") is None:
            record["seconds"] = 0.0
        return record

    # -------------------------------------------------------------------------------- configuration
    def check_config(self, config: dict, force: bool = False) -> None:
        """Decide how this run uses the directory, writing nothing (:meth:`commit` writes).

        * Same configuration (and every record carries its ``config_id``, or none carries one and
          ``config.json`` vouches for them): resume.
        * Otherwise, without ``force``: :class:`ConfigMismatchError` naming what changed.
        * With ``force``: if the records were scored the same way (same ``config_id``: only the
          strategy, its options or the budget changed), they are kept and continued (:meth:`keep_records`
          may still decide otherwise); else they are moved to ``previous/N/`` and scoring starts afresh.
        """
        self.config_id = new_id = config_id(config)
        self._config = config
        previous = _read_json_file(self.directory / CONFIG, "it is ignored: the records' config_id decide")
        self._rewrite_config = previous != config
        previous = upgrade_config(previous) if previous is not None else None
        ids = {r.get("config_id") for r in self.records.values()}
        unlabelled = None in ids
        ids.discard(None)
        if previous is None and not self.records:
            self.plan = "new"
            return
        if previous is not None:
            ids_agree = ids <= {config_id(previous)}
            problem = None if ids_agree else (
                f"{SCORES} holds records of {len(ids)} configuration(s) (config_id "
                f"{', '.join(sorted(ids))}) but {CONFIG} describes {config_id(previous)}")
            if previous == config and problem is None:
                self.plan = "resume"
                return
            changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
            what = f"changed: {', '.join(changed)}" if changed else problem
            comparable = problem is None and config_id(previous) == new_id
        else:
            comparable = not unlabelled and ids == {new_id}
            if comparable:  # config.json is missing or damaged, but every record says it was scored so
                self.plan = "resume"
                return
            what = (f"{CONFIG} is missing or damaged and "
                    + ("the records carry no config_id (written before lightning-epe 0.2), so their "
                       "configuration is unknown" if unlabelled and not ids else
                       f"the records were scored by {len(ids) + unlabelled} other configuration(s)"))
        if not force:
            raise ConfigMismatchError(
                f"{str(self.directory)!r} holds results of a different configuration ({what}). Use another "
                f"results directory, or force=True (--search.force true) to run the new configuration here: "
                f"records scored the same way are kept, any others are moved to "
                f"{self.directory / PREVIOUS}/N/ (nothing is deleted) and scoring starts afresh."
                + self._failure_hint()
            )
        self.plan = "continue" if comparable else "archive"
        self._archive_reason = what

    def _failure_hint(self) -> str:
        failed = [r for r in self.records.values() if r.get("error")]
        if failed and len(failed) == len(self.records):
            return (f" (Every one of its {len(failed)} records failed, e.g. {failed[0]['error'][:120]!r}: after "
                    "fixing the cause, force=True scores them again.)")
        return ""

    def keep_records(self, keep: bool) -> None:
        """Under ``force`` with comparable records: ``keep=False`` (the new strategy would propose other
        candidates for the stored trials) moves them aside instead of continuing them."""
        if self.plan == "continue" and not keep:
            self.plan = "archive"
            self._archive_reason += "; the new strategy proposes other candidates for the stored trials"

    def commit(self, files: dict[str, str] | None = None) -> str | None:
        """Carry out :meth:`check_config`'s decision once every check has passed: move an old
        configuration's files aside (force), write ``config.json`` and ``files`` (name -> text)
        atomically. Returns a sentence for the user when something was moved or taken over."""
        if not self.writer:
            return None
        message = None
        if self.plan == "archive":
            message = self._archive()
        elif self.plan == "continue":
            self.fresh_summary = True
            message = (f"force: the configuration changed ({self._archive_reason}); the {len(self.records)} "
                       f"records in {self.path} were scored the same way and are continued")
        if self.plan != "resume" or self._rewrite_config:
            write_json_atomic(self.directory / CONFIG, self._config)
        for name, text in (files or {}).items():
            write_text_atomic(self.directory / name, text)
        return message

    def _archive(self) -> str:
        """Move this directory's files to ``previous/N/`` (``scores.jsonl`` first: a kill midway leaves
        either the old records with their config, or no records, never records under a wrong config)."""
        root = self.directory / PREVIOUS
        root.mkdir(exist_ok=True)
        taken = {int(p.name) for p in root.iterdir() if p.name.isdigit()}
        target = root / str(max(taken, default=0) + 1)
        target.mkdir()
        moved = []
        for name in MOVED_BY_FORCE:
            if (self.directory / name).exists():
                os.replace(self.directory / name, target / name)
                moved.append(name)
        count = len(self.records)
        self.records.clear()
        self.fresh_summary = True
        return (f"force: {count} record(s) of another configuration ({self._archive_reason}) moved to {target}/ "
                f"({', '.join(moved)}); scoring afresh in {self.path}")

    # ---------------------------------------------------------------------------------- records
    def append(self, record: dict) -> None:
        """Append one record: one line, written through to the operating system before this returns
        (a process killed afterwards loses nothing) and fsynced at most :data:`SYNC_SECONDS` later (a
        machine that loses power loses at most that long's records), and at :meth:`close`.

        If the write fails (disk full, I/O error), the partial line is cut off again, so the file
        holds exactly the records written before, and an ``OSError`` says what happened and how
        to resume.
        """
        if self.config_id is not None:
            record.setdefault("config_id", self.config_id)
        record = dict(record, score=_json_safe(record.get("score")))
        if self.writer:
            line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()
            try:
                if self._file is None:  # (opened at the first record: commit may have moved the old file aside)
                    self._file = open(self.path, "ab", buffering=0)
                    self._size = self._file.seek(0, os.SEEK_END)
                    self._synced = time.monotonic()
                try:
                    _write_all(self._file, line)
                    self._size += len(line)
                    if time.monotonic() - self._synced >= SYNC_SECONDS:
                        self.sync()
                except OSError:
                    self._close_file(sync=False)
                    try:
                        os.truncate(self.path, self._size)  # shrinking needs no space
                    except OSError:
                        pass  # a torn last line is cut off on the next start anyway
                    raise
            except OSError as err:
                raise OSError(
                    err.errno, f"could not append trial {record.get('trial')} to {self.path}: {_why(err)}. "
                    f"The {len(self.records)} records already there are intact; free space (or fix the "
                    "directory) and run the same command again to resume."
                ) from err
        super().append(record)

    def sync(self) -> None:
        """fsync ``scores.jsonl``: the records appended so far survive a power loss."""
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._synced = time.monotonic()

    def _close_file(self, sync: bool = True) -> None:
        file, self._file = self._file, None
        if file is not None:
            try:
                if sync:
                    os.fsync(file.fileno())
            finally:
                file.close()

    def write_summary(self, summary: dict) -> None:
        """Replace ``summary.json`` (non-finite numbers, e.g. a NaN test metric, are written as null)."""
        write_json_atomic(self.directory / SUMMARY, finite_json(summary))

    def read_summary(self) -> dict:
        """``summary.json`` (a damaged one is ignored with a warning: it is rebuilt from the records)."""
        if self.fresh_summary:
            return {}
        return _read_json_file(self.directory / SUMMARY, "it is rebuilt from the records") or {}


def best_record(records: Iterable[dict]) -> dict | None:
    """The highest finite score; ties go to the earliest trial (NaN and failures rank last)."""
    scored = [r for r in records if r.get("score") is not None]
    return max(scored, key=lambda r: (r["score"], -r["trial"])) if scored else None
