"""The results directory: append-only score records, the effective config, a summary.

Layout of a results directory::

    config.json     the effective configuration of the run (resume refuses a different one)
    scores.jsonl    one JSON record per scored candidate, appended and flushed one by one
    summary.json    the best candidate, counts, timings; test metrics after training

A process killed while appending leaves at most one torn last line: it is cut off on the next
open, never fatal. Files other than ``scores.jsonl`` are replaced atomically (write + rename).
"""
from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

SCORES = "scores.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"


class ConfigMismatchError(RuntimeError):
    """An existing results directory was written by a different configuration."""


def _json_safe(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else value


def _why(err: OSError) -> str:
    """What went wrong, in words (the file is named by the caller)."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full (or over quota)"
    if err.strerror:
        return err.strerror + (f" ({err.filename})" if err.filename else "")
    return str(err)


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


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


class MemoryStore:
    """The records of a search without a results directory: kept in memory, keyed by ``trial``.

    The search loop talks to a store the same way with or without a directory.
    """

    path: Path | None = None
    directory: Path | None = None

    def __init__(self):
        self.records: dict[int, dict] = {}
        self._summary: dict = {}

    def check_config(self, config: dict, force: bool = False) -> None:
        pass

    def append(self, record: dict) -> None:
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

    ``writer=False`` (the other processes of a distributed search) reads the directory and keeps
    records in memory, but writes nothing.
    """

    def __init__(self, directory: str | os.PathLike, writer: bool = True):
        super().__init__()
        self.directory = Path(directory)
        self.writer = writer
        self.path = self.directory / SCORES
        if writer:
            self._check_writable()
        self._load()

    def _check_writable(self) -> None:
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
        for number, line in enumerate(data.decode().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                trial = int(record["trial"])
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{self.path}:{number} is not a score record ({err}): {line[:200]!r}") from None
            self.records.setdefault(trial, record)  # a line repeated by a crash between write and flush

    def check_config(self, config: dict, force: bool = False) -> None:
        """Record ``config``; refuse to resume a directory written by a different one unless ``force``."""
        path = self.directory / CONFIG
        if path.exists() and not force:
            previous = upgrade_config(json.loads(path.read_text()))
            if previous != config:
                changed = sorted(k for k in set(previous) | set(config) if previous.get(k) != config.get(k))
                raise ConfigMismatchError(
                    f"{str(self.directory)!r} holds results of a different configuration (changed: "
                    f"{', '.join(changed)}). Use another results directory, or force=True "
                    f"(--search.force true) to continue with the new configuration."
                )
        if self.writer:
            write_json_atomic(path, config)

    def append(self, record: dict) -> None:
        """Append one record (one line, flushed and fsynced).

        If the write fails (disk full, I/O error), the partial line is cut off again, so the file
        holds exactly the records written before, and an ``OSError`` says what happened and how
        to resume.
        """
        record = dict(record, score=_json_safe(record.get("score")))
        if self.writer:
            line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()
            size = self.path.stat().st_size if self.path.exists() else 0
            try:
                with open(self.path, "ab") as f:
                    f.write(line)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as err:
                try:
                    os.truncate(self.path, size)  # shrinking needs no space
                except OSError:
                    pass  # a torn last line is cut off on the next start anyway
                raise OSError(
                    err.errno, f"could not append trial {record.get('trial')} to {self.path}: {_why(err)}. "
                    f"The {len(self.records)} records already there are intact; free space (or fix the "
                    "directory) and run the same command again to resume."
                ) from err
        super().append(record)

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.directory / SUMMARY, summary)

    def read_summary(self) -> dict:
        path = self.directory / SUMMARY
        return json.loads(path.read_text()) if path.exists() else {}


def best_record(records: Iterable[dict]) -> dict | None:
    """The highest finite score; ties go to the earliest trial (NaN and failures rank last)."""
    scored = [r for r in records if r.get("score") is not None]
    return max(scored, key=lambda r: (r["score"], -r["trial"])) if scored else None
