"""Rich progress bar (ETA, rate, best so far) and leaderboard for searches."""
from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console()  # results (leaderboard, best, accuracy) go to stdout
progress_console = Console(stderr=True)  # the live bar goes to stderr


@contextmanager
def search_progress(total: int, done: int, enabled: bool = True, draws: int = 1):
    """A progress bar over ``total`` candidates of ``draws`` draws each; yields ``update(best_text)``
    to call after each candidate. With several draws the bar counts draws."""
    progress = Progress(
        TextColumn("[bold]scoring" + (f" x{draws}" if draws > 1 else "")), BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("best {task.fields[best]}"), console=progress_console, disable=not enabled,
    )
    with progress:
        task = progress.add_task("scoring", total=total * draws, completed=done * draws, rate="", best="-")

        def update(best: str) -> None:
            progress.advance(task, draws)
            speed = progress.tasks[0].speed
            progress.update(task, best=best, rate=f"{speed / draws:.2f} cand/s" if speed else "")

        yield update


def leaderboard(records: list[dict], top: int = 10, title: str = "leaderboard") -> Table:
    ranked = sorted((r for r in records if r.get("score") is not None), key=lambda r: (-r["score"], r["trial"]))
    failed = sum(r.get("error") is not None for r in records)
    undefined = sum(r.get("score") is None and r.get("error") is None for r in records)
    table = Table(title=title, caption=f"{len(records)} scored, {undefined} NaN, {failed} failed")
    for column, justify in (("rank", "right"), ("trial", "right"), ("candidate", "left"),
                            ("score", "right"), ("seconds", "right")):
        table.add_column(column, justify=justify)
    for rank, r in enumerate(ranked[:top], start=1):
        table.add_row(str(rank), str(r["trial"]), str(r.get("arch") or r["candidate"]),
                      f"{r['score']:.4f}", f"{r['seconds']:.2f}")
    return table
