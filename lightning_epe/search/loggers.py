"""A search in the user's Lightning loggers: each candidate's score, seconds and running best as metrics
(step = the trial), and the final leaderboard as a table where the logger has one.

Any Lightning logger works for the metrics (``CSVLogger``, ``TensorBoardLogger``, ``WandbLogger``,
``MLFlowLogger``, your own: anything with ``log_metrics``). The leaderboard goes

- ``CSVLogger``: to ``leaderboard.csv`` in the logger's ``log_dir`` (beside its ``metrics.csv``), and the
  search's configuration to its ``hparams.yaml``;
- ``TensorBoardLogger``: to the TEXT tab (``search/leaderboard``, a Markdown table, and
  ``search/config``);
- ``WandbLogger``: to a ``search/leaderboard`` table (``log_table``); ``MLFlowLogger``: to the run's
  ``search_leaderboard.json`` artifact (``MlflowClient.log_table``);
- any other logger with a ``log_table(key, columns, data)`` method: to it.
"""
from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterable

from .progress import ranked

#: Metric names, as they appear in the logger (``search/score`` ...).
SCORE, SECONDS, BEST = "search/score", "search/seconds", "search/best_score"
LEADERBOARD_COLUMNS = ["rank", "trial", "candidate", "arch", "score", "seconds"]


def as_loggers(logger: Any) -> list:
    """``None``/``False`` -> [], a logger -> [logger], a list of loggers -> the list (checked)."""
    if logger is None or logger is False:
        return []
    loggers = list(logger) if isinstance(logger, (list, tuple)) else [logger]
    for item in loggers:
        if not callable(getattr(item, "log_metrics", None)):
            raise TypeError(f"logger must be a Lightning logger (CSVLogger, TensorBoardLogger, ...; anything with "
                            f"log_metrics) or a list of them, got {type(item).__name__}")
    return loggers


class SearchLogging:
    """Sends a search's records to ``loggers`` (rank 0 only: the caller decides)."""

    def __init__(self, loggers: Iterable, score_label: str = "score"):
        self.loggers = list(loggers)
        self.score_label = score_label
        self.best: float | None = None

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def log_record(self, record: dict) -> None:
        """One candidate: its score (NaN when it has none: NaN or failed), seconds, and the best so far."""
        score = record.get("score")
        if score is not None and (self.best is None or score > self.best):
            self.best = score
        metrics = {SCORE: math.nan if score is None else float(score), SECONDS: float(record.get("seconds") or 0.0),
                   BEST: math.nan if self.best is None else float(self.best)}
        for logger in list(self.loggers):
            try:
                logger.log_metrics(metrics, step=int(record["trial"]))
            except Exception as err:  # a broken logger must not stop a search: its records are safe elsewhere
                self._drop(logger, err)

    def _drop(self, logger, err: Exception) -> None:
        self.loggers.remove(logger)
        warnings.warn(f"the search stops logging to {type(logger).__name__}, which failed: {type(err).__name__}: "
                      f"{err}", RuntimeWarning, stacklevel=3)

    def log_end(self, records: list[dict], config: dict, summary: dict) -> None:
        """The final leaderboard (every scored candidate, best first) and the configuration; then save."""
        rows = [[rank, r["trial"], _cell(r["candidate"]), r.get("arch") or str(r["candidate"]), r["score"],
                 r.get("seconds")] for rank, r in enumerate(ranked(records), start=1)]
        for logger in list(self.loggers):
            try:
                _leaderboard(logger, rows, config, summary, self.score_label)
                save = getattr(logger, "save", None)
                if callable(save):
                    save()
            except Exception as err:
                self._drop(logger, err)


def _cell(candidate) -> str | int:
    return candidate if isinstance(candidate, (int, str)) else json.dumps(candidate)


def _leaderboard(logger, rows: list[list], config: dict, summary: dict, score_label: str) -> None:
    from lightning.fabric.loggers import CSVLogger, TensorBoardLogger

    if isinstance(logger, CSVLogger):
        directory = Path(logger.log_dir)
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / "leaderboard.csv", "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(LEADERBOARD_COLUMNS)
            writer.writerows(rows)
        try:
            logger.log_hyperparams({"search": config})  # lightning.pytorch's CSVLogger: hparams.yaml
        except NotImplementedError:  # lightning.fabric's CSVLogger has no hyperparameters
            pass
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_text("search/leaderboard", _markdown(rows, summary, score_label), global_step=0)
        logger.experiment.add_text("search/config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```",
                                   global_step=0)
    elif type(logger).__name__ == "MLFlowLogger":
        data = {column: [row[i] for row in rows] for i, column in enumerate(LEADERBOARD_COLUMNS)}
        logger.experiment.log_table(logger.run_id, data=data, artifact_file="search_leaderboard.json")
    elif callable(getattr(logger, "log_table", None)):  # WandbLogger and others
        logger.log_table(key="search/leaderboard", columns=LEADERBOARD_COLUMNS, data=rows)


def _markdown(rows: list[list], summary: dict, score_label: str) -> str:
    lines = [f"| rank | trial | candidate | {score_label} | seconds |", "|---:|---:|---|---:|---:|"]
    lines += [f"| {rank} | {trial} | {arch} | {score:.4f} | {seconds:.2f} |"
              for rank, trial, _, arch, score, seconds in rows]
    counts = ", ".join(f"{summary.get(k, 0)} {k}" for k in ("scored", "nan", "failed"))
    return "\n".join(lines + ["", counts])
