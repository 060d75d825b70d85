"""NAS-Bench-201 ground truth: a CSV table, or the official NATS-Bench topology files (optional).

Column names follow ``nb201_accuracies.csv``: ``cifar10_valid_acc`` (trained on 25k, the held-out
25k: "C10 val"), ``cifar10_valid_test_acc``, ``cifar10_test_acc`` (trained on 50k: "C10 test"),
``cifar100_test_acc``, ``imagenet16_120_test_acc``; the NATS adapter adds ``cifar100_valid_acc``
and ``imagenet16_120_valid_acc``. Values are 200-epoch accuracies in %, averaged over seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .tables import Table, read_csv_table

#: column -> (NATS-Bench data set name, key of ``api.get_more_info(...)``)
NATS_COLUMNS: dict[str, tuple[str, str]] = {
    "cifar10_valid_acc": ("cifar10-valid", "valid-accuracy"),
    "cifar10_valid_test_acc": ("cifar10-valid", "test-accuracy"),
    "cifar10_test_acc": ("cifar10", "test-accuracy"),
    "cifar100_valid_acc": ("cifar100", "valid-accuracy"),
    "cifar100_test_acc": ("cifar100", "test-accuracy"),
    "imagenet16_120_valid_acc": ("ImageNet16-120", "valid-accuracy"),
    "imagenet16_120_test_acc": ("ImageNet16-120", "test-accuracy"),
}

NATS_INSTALL = ("reading the official NATS-Bench files needs the optional package nats_bench: "
                "`pip install nats_bench`, then download the topology benchmark "
                "(NATS-tss-v1_0-3ffb9-simple) as its README explains")


def load_csv_ground_truth(path: str | Path, columns: Sequence[str] | None = None) -> Table:
    """Ground truth from a CSV in the format of ``nb201_accuracies.csv``.

    Args:
        path: CSV with an ``index`` (NB201 benchmark index) and/or ``arch_str`` column and
            accuracy columns.
        columns: accuracy columns to keep; ``None`` keeps every numeric non-identifier column.
    """
    table = read_csv_table(path, columns)
    keys = [i for i in table.index if i >= 0] or [a for a in table.arch_str if a]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: a ground-truth table must list every cell once; it has repeated cells "
                         "(a file with one row per data set, like zc_nasbench201_subset.csv, is a score "
                         "table, not a ground truth)")
    return table


def load_nats_ground_truth(path: str | Path | None, columns: Sequence[str] | None = None,
                           indices: Iterable[int] | None = None, hp: str = "200") -> Table:
    """Ground truth from the official NATS-Bench topology benchmark through ``nats_bench``.

    Accuracies are ``api.get_more_info(i, dataset, hp=hp, is_random=False)`` (the mean over the
    benchmark's seeds), mapped to columns by :data:`NATS_COLUMNS`. This adapter is exercised in
    the tests against a stand-in for the ``nats_bench`` API, not against the real files.

    Args:
        path: the benchmark file or folder given to ``nats_bench.create`` (``None`` uses
            ``$TORCH_HOME`` as nats_bench does).
        columns: columns of :data:`NATS_COLUMNS` to read (default: all).
        indices: benchmark indices to read (default: all 15,625).
        hp: training schedule, ``"200"`` (the published results) or ``"12"``.
    """
    try:
        import nats_bench
    except ImportError:
        raise ImportError(NATS_INSTALL) from None
    columns = list(NATS_COLUMNS) if columns is None else list(columns)
    unknown = [c for c in columns if c not in NATS_COLUMNS]
    if unknown:
        raise ValueError(f"unknown NATS column(s) {unknown}; valid: {', '.join(NATS_COLUMNS)}")
    api = nats_bench.create(None if path is None else str(path), "tss", fast_mode=True, verbose=False)
    indices = list(range(len(api))) if indices is None else [int(i) for i in indices]
    values = {c: np.empty(len(indices), dtype=np.float64) for c in columns}
    arch = []
    for row, i in enumerate(indices):
        arch.append(str(api.arch(i)))
        infos: dict[str, dict] = {}
        for c in columns:
            dataset, key = NATS_COLUMNS[c]
            if dataset not in infos:
                infos[dataset] = api.get_more_info(i, dataset, hp=hp, is_random=False)
            values[c][row] = float(infos[dataset].get(key, np.nan))
    return Table(np.array(indices, dtype=np.int64), arch, values, source=f"NATS-Bench tss {path}")


def load_ground_truth(source: str | Path, columns: Sequence[str] | None = None) -> Table:
    """A ground-truth table from a CSV path, or ``nats:PATH`` (also a folder or ``*.pickle.pbz2``) for NATS-Bench."""
    text = str(source)
    if text.startswith("nats:"):
        return load_nats_ground_truth(text[5:] or None, columns)
    path = Path(text)
    if path.is_dir() or text.endswith((".pbz2", ".pickle")) or "NATS-tss" in path.name:
        return load_nats_ground_truth(path, columns)
    return load_csv_ground_truth(path, columns)
