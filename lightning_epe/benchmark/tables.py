"""Score and ground-truth tables: reading (CSV, search ``scores.jsonl``) and joining by cell.

A :class:`Table` is a list of cells, each identified by an NB201 ``index`` and/or an ``arch_str``,
with named float columns (NaN where a value is missing or not a number).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .draws import KINDS

#: Columns that identify a cell or a run, never scored or correlated.
ID_COLUMNS = frozenset({"index", "arch_str", "arch", "candidate", "naslib_ops", "seed", "dataset", "error",
                        "space", "time", "time_s", "status"})


@dataclass
class Table:
    """Cells (rows) with ``index`` (int, -1 if unknown), ``arch_str`` ("" if unknown) and float columns.

    ``present`` tells, for columns with empty cells, which rows hold a value (an empty cell and a
    ``nan`` both read as NaN: "not computed" and "computed, undefined" differ only here).
    """

    index: np.ndarray
    arch_str: list[str]
    columns: dict[str, np.ndarray]
    source: str = ""
    notes: list[str] = field(default_factory=list)
    present: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.arch_str)

    def select(self, rows: np.ndarray) -> "Table":
        rows = np.asarray(rows, dtype=np.int64)
        return Table(self.index[rows], [self.arch_str[i] for i in rows],
                     {k: v[rows] for k, v in self.columns.items()}, self.source, list(self.notes),
                     {k: v[rows] for k, v in self.present.items()})


def _to_float(text) -> float:
    if text is None:
        return math.nan
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    text = str(text).strip()
    if text == "" or text.lower() in {"nan", "none", "null", "na"}:
        return math.nan
    return float(text)  # accepts inf, -inf, Infinity


def _is_number(text: str) -> bool:
    try:
        _to_float(text)
        return True
    except ValueError:
        return False


def _parse_index(value) -> int:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return -1
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        return -1  # e.g. an arch string given as a candidate
    return int(value)


def read_csv_table(path: str | Path, columns: Sequence[str] | None = None) -> Table:
    """Read a CSV with an ``index`` and/or ``arch_str`` column plus numeric columns.

    Args:
        path: the CSV file.
        columns: the value columns to keep; ``None`` keeps every column (other than the
            identifier columns in ``ID_COLUMNS``) whose values are all numbers or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {str(path)!r} does not exist")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    if "index" not in header and "arch_str" not in header:
        raise ValueError(f"{path}: a table needs an 'index' (NB201 index) or 'arch_str' column; "
                         f"found columns {header}")
    if columns is None:
        columns = [h for h in header if h not in ID_COLUMNS and all(_is_number(r.get(h)) for r in rows)]
        if not columns:
            raise ValueError(f"{path}: no numeric value columns found among {header}")
    else:
        missing = [c for c in columns if c not in header]
        if missing:
            raise ValueError(f"{path}: column(s) {missing} not found; available: {header}")
    values, present = {}, {}
    for c in columns:
        try:
            values[c] = np.array([_to_float(r.get(c)) for r in rows], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: column {c!r} holds a value that is not a number ({exc})") from None
        filled = np.array([(r.get(c) or "").strip() != "" for r in rows], dtype=bool)
        if not filled.all():
            present[c] = filled
    index = np.array([_parse_index(r.get("index")) for r in rows], dtype=np.int64)
    arch = [(r.get("arch_str") or "").strip() for r in rows]
    return Table(index, arch, values, source=str(path), present=present)


def read_jsonl_scores(path: str | Path) -> Table:
    """Read a search's ``scores.jsonl``: one object per line with ``candidate``, ``arch``, ``score``, ``error``.

    A record with an ``error`` or without a finite-or-NaN ``score`` is kept with score NaN (it is
    then counted as a NaN score, never dropped). A search with draws (records with a ``draws`` list)
    also gives per-draw columns ``score@b0``, ``score@<b|i|d><j>`` for the k-table, the kind read from
    the ``config.json`` beside the file (``draws.over``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score file {str(path)!r} does not exist")
    index, arch, score, draws = [], [], [], []
    errors = 0
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            candidate = record.get("candidate")
            arch_text = record.get("arch") or (candidate if isinstance(candidate, str) and "|" in candidate else "")
            index.append(_parse_index(candidate) if not isinstance(candidate, bool) else -1)
            arch.append(str(arch_text or "").strip())
            values = record.get("draws")
            draws.append([_to_float(v) for v in values] if isinstance(values, list) and not record.get("error")
                         and all(not isinstance(v, dict) for v in values) else None)
            if record.get("error"):
                errors += 1
                score.append(math.nan)
            else:
                try:
                    score.append(_to_float(record.get("score")))
                except ValueError:
                    score.append(math.nan)
    if not arch:
        raise ValueError(f"{path}: no records")
    table = Table(np.array(index, dtype=np.int64), arch, {"score": np.array(score, dtype=np.float64)},
                  source=str(path))
    _add_draw_columns(table, draws, path.parent / "config.json")
    if errors:
        table.notes.append(f"{errors} record(s) with an error, counted as NaN scores")
    return table


def _add_draw_columns(table: Table, draws: list[list[float] | None], config: Path) -> None:
    """Per-draw columns of a search with draws; rows without draws (failed candidates) are absent."""
    k = max((len(d) for d in draws if d), default=0)
    if k < 2:
        return
    over = (json.loads(config.read_text()).get("draws") or {}).get("over", "batches") if config.is_file() else "batches"
    kind = next(letter for letter, name in KINDS.items() if name == over)
    names = ["score@b0"] + [f"score@{kind}{j}" for j in range(1, k)]
    for j, name in enumerate(names):
        table.columns[name] = np.array([d[j] if d and j < len(d) else math.nan for d in draws], dtype=np.float64)
        table.present[name] = np.array([bool(d) and j < len(d) for d in draws], dtype=bool)


def read_scores(path: str | Path, columns: Sequence[str] | None = None) -> Table:
    """A score table from a ``.csv`` or a search's ``.jsonl`` (column ``score``)."""
    path = Path(path)
    if path.suffix.lower() in {".jsonl", ".json"}:
        table = read_jsonl_scores(path)
        if columns is not None and list(columns) != ["score"]:
            raise ValueError(f"{path}: a scores.jsonl has one score column, 'score'; got {list(columns)}")
        return table
    return read_csv_table(path, columns)


@dataclass
class Joined:
    """Scores and ground truth aligned row by row (one row per distinct cell of the score table, in
    the ground truth's row order)."""

    index: np.ndarray
    arch_str: list[str]
    scores: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    key: str
    unmatched: int
    duplicates: int
    notes: list[str]
    present: dict[str, np.ndarray] = field(default_factory=dict)

    def has_value(self, column: str) -> np.ndarray:
        """Rows where ``column`` holds a value (NaN included), as opposed to an empty cell."""
        return self.present.get(column, np.ones(len(self.arch_str), dtype=bool))


def join(scores: Table, truth: Table) -> Joined:
    """Align ``scores`` with ``truth`` by NB201 index when both have one, else by arch string.

    Cells of the score table absent from the ground truth are counted (``unmatched``); a cell
    scored more than once keeps its first row (``duplicates`` counts the others). When both
    tables carry both keys, the arch strings must agree.
    """
    use_index = bool((scores.index >= 0).any() and (truth.index >= 0).any())
    if use_index:
        key = "index"
        truth_keys = {int(i): row for row, i in enumerate(truth.index) if i >= 0}
        by_arch = {a: int(truth.index[row]) for row, a in enumerate(truth.arch_str) if a and truth.index[row] >= 0}
        # a row without an index (e.g. a candidate given as an arch string) is found by its arch string
        score_keys = [int(i) if i >= 0 else by_arch.get(a) for i, a in zip(scores.index, scores.arch_str)]
    else:
        if not any(scores.arch_str) or not any(truth.arch_str):
            raise ValueError(f"cannot join {scores.source} and {truth.source}: they share neither an 'index' "
                             "nor an 'arch_str' column")
        key = "arch_str"
        score_keys = [a or None for a in scores.arch_str]
        truth_keys = {a: row for row, a in enumerate(truth.arch_str) if a}
    seen: set = set()
    score_rows, truth_rows = [], []
    unmatched = duplicates = 0
    for row, k in enumerate(score_keys):
        if k is None or k not in truth_keys:
            unmatched += 1
            continue
        if k in seen:
            duplicates += 1
            continue
        seen.add(k)
        score_rows.append(row)
        truth_rows.append(truth_keys[k])
    if not score_rows:
        raise ValueError(f"no cell of {scores.source} is in the ground truth {truth.source} (joined by {key})")
    if use_index:
        for s, t in zip(score_rows, truth_rows):
            a, b = scores.arch_str[s], truth.arch_str[t]
            if a and b and a != b:
                raise ValueError(f"{scores.source}: index {scores.index[s]} has arch {a!r} but the ground truth "
                                 f"{truth.source} says {b!r}; are both NB201 benchmark indices?")
    # rows in ground-truth order (NB201 index order for the usual tables): results do not depend on
    # the order of the score file (a resumed or sharded run gives the same report)
    order = sorted(range(len(score_rows)), key=lambda k: truth_rows[k])
    score_rows, truth_rows = [score_rows[k] for k in order], [truth_rows[k] for k in order]
    s_rows, t_rows = np.array(score_rows), np.array(truth_rows)
    notes = list(scores.notes) + list(truth.notes)
    if unmatched:
        notes.append(f"{unmatched} scored row(s) not in the ground truth (joined by {key}), left out")
    if duplicates:
        notes.append(f"{duplicates} repeated cell(s) in the score table, first row kept")
    arch = [truth.arch_str[t] or scores.arch_str[s] for s, t in zip(score_rows, truth_rows)]
    index = np.where(truth.index[t_rows] >= 0, truth.index[t_rows], scores.index[s_rows])
    return Joined(index, arch, {k: v[s_rows] for k, v in scores.columns.items()},
                  {k: v[t_rows] for k, v in truth.columns.items()}, key, unmatched, duplicates, notes,
                  {k: v[s_rows] for k, v in scores.present.items()})
