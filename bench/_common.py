"""What the bench/ scripts share: the CIFAR-10 sample batch, Kendall tau-b, reading and writing CSV rows.

The scripts import it as ``_common`` (``python bench/<script>.py`` puts bench/ on ``sys.path``; so
do the tests that load them). It needs only numpy and torch to import (bench/speed.py runs on bare
accelerator machines). Rank correlations of a score with ground truth are the library's
(``lightning_epe.benchmark.rank_correlations``); :func:`kendall_tau_b` compares two rankings that
may both hold NaN, thousands of times in a bootstrap, where the library's torchmetrics Kendall tau
is too slow (about 0.1 s for 1,000 cells: it loops over the cells in Python; scipy: 1 ms).
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

# The shared data, as the scripts' defaults name it: relative to the repository root, where they run.
CIFAR10_SAMPLE = "../shared/data/cifar10/cifar10_sample.npz"
NB201_TRUTH = "../shared/data/nb201/nb201_accuracies.csv"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def load_batch(path: str | Path, batch: int, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` rows of the CIFAR-10 sample from row ``start`` on, CIFAR-10 normalised.

    Rows ``start .. start + batch - 1`` taken modulo the sample's length (at most the whole sample
    once); ``x`` uint8 HWC -> float32 NCHW / 255, then ``(x - mean) / std`` per channel; ``y`` int64.
    """
    data = np.load(path)
    n = len(data["y"])
    rows = (start + np.arange(min(batch, n))) % n
    x = torch.from_numpy(data["x"][rows]).permute(0, 3, 1, 2).float().div(255.0)
    mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(), torch.from_numpy(data["y"][rows]).to(torch.int64)


def kendall_tau_b(a, b) -> float:
    """Kendall tau-b (``scipy.stats.kendalltau``) of two rankings, NaN on either side tied below every other value.

    NaN ranks last, as the library ranks NaN scores (``lightning_epe.benchmark.score_ranks``; here
    NaN ties with ``-inf``). NaN when fewer than 2 values or a side is constant.
    """
    from scipy.stats import kendalltau

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(kendalltau(np.where(np.isnan(a), -np.inf, a), np.where(np.isnan(b), -np.inf, b)).statistic)


def read_rows(path: str | Path) -> list[dict]:
    """The rows of a CSV as dicts; none when the file is missing or empty."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class CsvAppender:
    """Appends rows to a CSV, each in one ``write`` to a file opened for appending, then synced.

    Several processes (shards) may extend the same file at once, and a kill loses at most the
    row being written. The header is written first when the file is new or empty. Use as a
    context manager; ``append`` takes a sequence in ``header`` order or a dict (missing keys empty).
    """

    def __init__(self, path: str | Path, header: Sequence[str]):
        self.header = list(header)
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            self.append(self.header)

    def append(self, row: Sequence | Mapping) -> None:
        if isinstance(row, Mapping):
            extra = set(row) - set(self.header)
            if extra:
                raise ValueError(f"fields not in the header: {sorted(extra)}")
            row = [row.get(k, "") for k in self.header]
        line = io.StringIO()
        csv.writer(line, lineterminator="\n").writerow(row)
        data = line.getvalue().encode()
        if os.write(self.fd, data) != len(data):
            raise OSError(f"short write appending to a CSV ({len(data)} bytes)")
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> "CsvAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def replace_csv(path: str | Path, header: Sequence[str], rows: Iterable[Mapping]) -> None:
    """Write a whole CSV atomically: to ``<path>.tmp``, then renamed over ``path``."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(header), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
