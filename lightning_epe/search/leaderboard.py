"""``lightning_epe.rank(models, data)``: which of my models should I train? A search over a plain list, in one call.

::

    import lightning_epe
    board = lightning_epe.rank([make_small, make_wide, "resnet18"], datamodule)   # or a batch (x, y)
    print(board)                                                                    # best first
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .progress import leaderboard as leaderboard_table
from .progress import ranked

COLUMNS = ("rank", "candidate", "score", "seconds", "error", "reason")


class Leaderboard(list):
    """The records of a ranking, best first: the scored ones by score (ties: the earlier trial), then the NaN
    ones (``reason`` says why), then the failed ones (``error``, ``traceback``). Each record is a dict (the
    search's record, with ``rank``: 1 for the best, None for NaN and failed); sort it, filter it, print it
    (a table), or ``save`` it (``.csv``, ``.json`` or ``.jsonl``)."""

    def __init__(self, records: Sequence[Mapping], score: str = "score"):
        scored = ranked(list(records))
        nan = [r for r in records if r.get("score") is None and r.get("error") is None]
        failed = [r for r in records if r.get("error") is not None]
        rows = [{**r, "rank": i} for i, r in enumerate(scored, start=1)]
        rows += [{**r, "rank": None} for r in (*nan, *failed)]
        super().__init__(rows)
        self.score = score

    @property
    def best(self) -> dict | None:
        """The best record (None if none got a score)."""
        return self[0] if self and self[0]["rank"] == 1 else None

    @property
    def names(self) -> list:
        """The candidates, best first."""
        return [r["candidate"] for r in self]

    @property
    def failed(self) -> list[dict]:
        return [r for r in self if r.get("error") is not None]

    def table(self, top: int | None = None):
        """A rich table of the ``top`` best (default: all), with the counts of scored, NaN and failed."""
        return leaderboard_table(list(self), top=len(self) if top is None else top,
                                 title=f"leaderboard ({self.score})")

    def __str__(self) -> str:
        from rich.console import Console

        console = Console(width=100, record=True, file=io.StringIO())
        console.print(self.table())
        return console.export_text().rstrip()

    def save(self, path: str | os.PathLike) -> Path:
        """Write the records: ``.csv`` (one row each, the columns :data:`COLUMNS`), ``.json`` (a list) or ``.jsonl``
        (one record a line, as a search's ``scores.jsonl``)."""
        path = Path(path).expanduser()
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json", ".jsonl"):
            raise ValueError(f"Leaderboard.save writes .csv, .json or .jsonl files, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as f:
            if suffix == ".csv":
                writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self)
            elif suffix == ".json":
                json.dump(list(self), f, indent=1)
            else:
                f.writelines(json.dumps(r) + "\n" for r in self)
        return path


class TensorBatch:
    """One batch ``(inputs, targets)`` as the data of a search (what :func:`rank` makes of a batch): every
    candidate is scored on the whole batch. ``num_classes``: given, or the largest label + 1."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None):
        if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
            raise TypeError(f"a batch is a pair of tensors (inputs, targets), got ({type(inputs).__name__}, "
                            f"{type(targets).__name__})")
        if len(inputs) != len(targets):
            raise ValueError(f"a batch's inputs and targets differ in length: {len(inputs)} and {len(targets)}")
        self.dataset = torch.utils.data.TensorDataset(inputs, targets)
        self.batch_size = len(inputs)
        self.num_classes = num_classes if num_classes is not None else int(targets.max()) + 1 if len(targets) else None
        self.in_channels = inputs.shape[1] if inputs.dim() == 4 else None

    def setup(self, stage: str | None = None) -> None:
        pass

    def prepare_data(self) -> None:
        pass

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size)


def rank(models: Sequence | Mapping, data: Any, score: str = "ensemble", *, num_classes: int | None = None,
         progress: bool = False, **search_options) -> Leaderboard:
    """Score every model once, untrained, and rank them: the three-line answer to "which of my models should I
    train?".

    Args:
        models: a list of factories (callables returning an ``nn.Module``: a class, a function) and/or timm
            model names, or a dict name -> factory or timm name (:class:`~lightning_epe.spaces.ListSpace`).
            The names are the candidates of the records.
        data: a LightningDataModule (batches drawn as a search draws them), or one batch ``(inputs, targets)``.
        score: a registered score (default: the rank ensemble, the best-ranking we measured; ``"epe"``, ...).
        num_classes: the classes of the networks (default: the data module's, or a batch's largest label + 1).
        progress: show the progress and the leaderboard while scoring.
        search_options: any other argument of :class:`~lightning_epe.ArchitectureSearch` (``seed``,
            ``batch_size``, ``accelerator``, ``score_options``, ``draws``, ``output``, ``results_dir``, ...).

    Returns the :class:`Leaderboard`, best first. It is an :class:`~lightning_epe.ArchitectureSearch`
    over the list (``exhaustive``), with its guarantees: every network is built anew under its seed and
    scored without side effects, a NaN score is recorded with its reason, a failing model is recorded with its
    error and the others go on.
    """
    from .search import ArchitectureSearch

    if isinstance(data, (tuple, list)) and len(data) >= 2 and isinstance(data[0], torch.Tensor):
        data = TensorBatch(data[0], data[1], num_classes)
    search = ArchitectureSearch(space=models if not isinstance(models, (str, bytes)) else [models], score=score,
                                search_strategy="exhaustive", budget=None, num_classes=num_classes,
                                progress=progress, **search_options)
    return Leaderboard(search.run(data).records, score=search.score_label)
