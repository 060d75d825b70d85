"""Search progress (a rich bar in a terminal, plain periodic lines elsewhere) and the leaderboard."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

console = Console()  # results (leaderboard, best, accuracy) go to stdout
progress_console = Console(stderr=True)  # the live bar goes to stderr

#: Seconds between two plain progress lines (when stderr is not a terminal).
PLAIN_INTERVAL = 10.0
RATE_WIDTH = 14  # "123.45 cand/s"
TIME_WIDTH = 8  # "10:00:00"
MIN_BEST = 40  # the live bar shrinks (to 5 columns) before the best text gets fewer columns than this


@contextmanager
def search_progress(total: int, done: int, enabled: bool = True, draws: int = 1, stream: TextIO | None = None,
                    interval: float = PLAIN_INTERVAL):
    """Progress over ``total`` candidates of ``draws`` draws each (``done`` already scored: a resume);
    yields ``update(best_text)`` to call after each candidate scored.

    On a terminal (or in Jupyter): rich's live bar on stderr (with several draws it counts draws).
    Elsewhere (CI logs, ``nohup``, ``| tee``, a file), where a live bar would be garbled: plain log
    lines on ``stream`` (default stderr), one after the first candidate, then at most one every
    ``interval`` seconds, and one when the last candidate is scored.
    """
    if not enabled:
        yield lambda best: None
        return
    out = progress_console if stream is None else Console(file=stream)
    if out.is_terminal or out.is_jupyter:
        with _rich_progress(out, total, done, draws) as update:
            yield update
    else:
        yield PlainProgress(total, done, draws=draws, stream=stream, interval=interval).update


@contextmanager
def _rich_progress(out: Console, total: int, done: int, draws: int):
    """The live bar. Everything but the best-so-far text has a fixed width (count, rate, elapsed, ETA), and the
    bar shrinks first and then the best text is cut to what is left of the console's width, so on a narrow
    terminal (80 columns) the line keeps the numbers and cuts the arch string."""
    label = "scoring" + (f" x{draws}" if draws > 1 else "")
    steps = total * draws
    fixed = len(label) + (2 * len(str(steps)) + 1) + RATE_WIDTH + 2 * TIME_WIDTH + len("ETA") + len("best ") + 7
    bar = max(5, min(40, out.width - fixed - MIN_BEST))
    progress = Progress(
        TextColumn(f"[bold]{label}"), BarColumn(bar_width=bar), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}", table_column=Column(width=RATE_WIDTH, no_wrap=True)),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("best {task.fields[best]}", table_column=Column(no_wrap=True)), console=out,
    )
    with progress:
        task = progress.add_task("scoring", total=steps, completed=done * draws, rate="", best="-")

        def update(best: str) -> None:
            progress.advance(task, draws)
            speed = progress.tasks[0].speed
            room = max(1, out.width - fixed - bar - 1)
            progress.update(task, best=best if len(best) <= room else best[:room - 1] + "…",
                            rate=f"{speed / draws:.2f} cand/s" if speed else "")

        yield update


class PlainProgress:
    """Progress as plain log lines, for streams that are not terminals::

        scoring: 10/30 candidates (33%), 2.13 cand/s, elapsed 0:00:05, ETA 0:00:09, best 6231.04 (|skip...)

    A line after the first candidate, then at most one every ``interval`` seconds, and always one
    after the last. ``clock`` is the time source (tests pass their own).
    """

    def __init__(self, total: int, done: int = 0, draws: int = 1, stream: TextIO | None = None,
                 interval: float = PLAIN_INTERVAL, clock: Callable[[], float] = time.monotonic):
        self.total, self.done, self.resumed = total, done, done
        self.label = "scoring" + (f" x{draws} draws" if draws > 1 else "")
        self.stream, self.interval, self.clock = stream, interval, clock
        self.started = clock()
        self.last: float | None = None
        if done:
            self._print(f"{self.label}: resuming, {done}/{total} candidates already scored")

    def _print(self, line: str) -> None:
        print(line, file=self.stream if self.stream is not None else sys.stderr, flush=True)

    def update(self, best: str) -> None:
        self.done += 1
        now = self.clock()
        if self.last is not None and now - self.last < self.interval and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.started
        scored = self.done - self.resumed
        rate = scored / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else None
        percent = 100 * self.done // self.total if self.total else 100
        self._print(f"{self.label}: {self.done}/{self.total} candidates ({percent}%), "
                    + (f"{rate:.2f} cand/s, " if rate > 0 else "")
                    + f"elapsed {_clock(elapsed)}, ETA {'-' if eta is None else _clock(eta)}, best {best}")


def report_failure(record: dict) -> None:
    """One line on stderr for a candidate that failed (the first line of its error); the search goes on."""
    error = (record.get("error") or "").splitlines()[0] if record.get("error") else ""
    progress_console.print(f"failed: trial {record['trial']}, candidate {record.get('arch') or record['candidate']}: "
                           f"{error}", markup=False, highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def ranked(records: list[dict]) -> list[dict]:
    """The scored records, best first (ties: the earlier trial)."""
    return sorted((r for r in records if r.get("score") is not None), key=lambda r: (-r["score"], r["trial"]))


def leaderboard(records: list[dict], top: int = 10, title: str = "leaderboard") -> Table:
    failed = sum(r.get("error") is not None for r in records)
    undefined = sum(r.get("score") is None and r.get("error") is None for r in records)
    scored = len(records) - failed - undefined
    table = Table(title=title, caption=f"{scored} scored, {undefined} NaN, {failed} failed")
    for column, justify in (("rank", "right"), ("trial", "right"), ("candidate", "left"),
                            ("score", "right"), ("seconds", "right")):
        table.add_column(column, justify=justify)
    for rank, r in enumerate(ranked(records)[:top], start=1):
        table.add_row(str(rank), str(r["trial"]), str(r.get("arch") or r["candidate"]),
                      f"{r['score']:.4f}", f"{r['seconds']:.2f}")
    return table
