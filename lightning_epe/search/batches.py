"""Scoring batches drawn from a LightningDataModule: one fixed batch, or a fresh one per trial."""
from __future__ import annotations

import warnings

import torch
from torch.utils.data import default_collate

from ..scores import check_batch, check_labels
from ..scores.draws import draw_seed

BATCH_POLICIES = ("fixed", "fresh")


class ScoringBatches:
    """Batches for scoring, reproducible per trial and independent of the global RNG.

    ``fixed``: the same batch for every candidate (drawn once, moved to the device once).
    ``fresh``: a new batch, with the training augmentation, for every trial, as the official
    search; trial ``t`` always gets the same batch, so a resumed search sees what a whole run saw.
    With draws over batches, draw ``j`` of a trial gets batch ``j`` of the same policy: under
    ``fixed`` the same k batches for every candidate (kept on the device), under ``fresh`` k new
    ones per trial. Draw 0 is always the batch a plain score uses.

    Every batch is checked (at least 2 samples, finite float inputs, integer labels of shape (B,)
    in ``0..num_classes - 1``); a bad batch raises a ``ValueError``/``TypeError`` naming the data
    module, before any candidate is scored on it.
    """

    def __init__(self, datamodule, batch_size: int | None, policy: str, seed: int, device: torch.device,
                 num_classes: int | None = None):
        if policy not in BATCH_POLICIES:
            raise ValueError(f"unknown batch policy {policy!r}; accepted: {', '.join(BATCH_POLICIES)}")
        if datamodule is None:
            raise ValueError("scoring needs a datamodule to draw batches from")
        datamodule.setup("fit")  # prepare_data (downloads) is the caller's: once per node, see Workers
        self.source = type(datamodule).__name__
        self.dataset = datamodule.train_dataloader().dataset
        if not hasattr(self.dataset, "__getitem__") or not hasattr(self.dataset, "__len__"):
            raise TypeError("scoring batches need a map-style training dataset (with __len__ and __getitem__)")
        self.batch_size = batch_size or getattr(datamodule, "batch_size", None) or 128
        if self.batch_size < 2:
            raise ValueError(f"the scoring batch size must be >= 2, got {self.batch_size}")
        if len(self.dataset) < 2:
            raise ValueError(f"the training set of {self.source} has {len(self.dataset)} sample(s); scoring "
                             "needs at least 2 (correlations between samples)")
        if self.batch_size > len(self.dataset):  # (summary.json records the size used: scoring_batch_size)
            warnings.warn(f"the scoring batch size {self.batch_size} is larger than the training set of {self.source} "
                          f"({len(self.dataset)} samples): scoring batches have {len(self.dataset)} samples "
                          "(summary.json: scoring_batch_size)", RuntimeWarning, stacklevel=2)
            self.batch_size = len(self.dataset)
        self.policy, self.seed, self.device, self.num_classes = policy, seed, device, num_classes
        self._fixed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        first = self._draw(0, 0)  # checks the data before any candidate is built
        if policy == "fixed":
            self._fixed[0] = first

    def _draw(self, trial: int, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):  # CPU only, restored
            torch.random.default_generator.manual_seed(draw_seed(self.seed * 1_000_003 + trial, draw))
            indices = torch.randperm(len(self.dataset))[: self.batch_size].tolist()
            samples = [self.dataset[i] for i in indices]
        try:
            inputs, targets = default_collate(samples)[:2]
        except RuntimeError as err:  # e.g. "stack expects each tensor to be equal size"
            raise ValueError(f"{self._where(trial, draw)} cannot be made into one batch: {err}. Images of different "
                             "sizes? Resize or crop them to one size in the data module's transform") from None
        return self._check(inputs, torch.as_tensor(targets), trial, draw)

    def _where(self, trial: int, draw: int) -> str:
        return f"the scoring batch of trial {trial}{f' (draw {draw})' if draw else ''} from {self.source}"

    def _check(self, inputs, targets, trial: int, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
        where = self._where(trial, draw)
        try:
            inputs, targets = check_batch(inputs, targets)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where} is unusable: {err}") from None
        if self.num_classes is not None:
            check_labels(targets, self.num_classes, where=where,
                         hint="set num_classes (--search.num_classes) to the data's class count")
        return inputs.to(self.device), targets.to(self.device)

    def __call__(self, trial: int, draw: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        if self.policy == "fresh":
            return self._draw(trial, draw)
        if draw not in self._fixed:
            self._fixed[draw] = self._draw(0, draw)
        return self._fixed[draw]
