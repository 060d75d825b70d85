"""Scoring batches drawn from a LightningDataModule: one fixed batch, or a fresh one per trial."""
from __future__ import annotations

import torch
from torch.utils.data import default_collate

BATCH_POLICIES = ("fixed", "fresh")


class ScoringBatches:
    """Batches for scoring, reproducible per trial and independent of the global RNG.

    ``fixed``: the same batch for every candidate (drawn once, moved to the device once).
    ``fresh``: a new batch, with the training augmentation, for every trial, as the official
    search; trial ``t`` always gets the same batch, so a resumed search sees what a whole run saw.
    """

    def __init__(self, datamodule, batch_size: int | None, policy: str, seed: int, device: torch.device):
        if policy not in BATCH_POLICIES:
            raise ValueError(f"unknown batch policy {policy!r}; accepted: {', '.join(BATCH_POLICIES)}")
        if datamodule is None:
            raise ValueError("scoring needs a datamodule to draw batches from")
        datamodule.prepare_data()
        datamodule.setup("fit")
        self.dataset = datamodule.train_dataloader().dataset
        if not hasattr(self.dataset, "__getitem__") or not hasattr(self.dataset, "__len__"):
            raise TypeError("scoring batches need a map-style training dataset (with __len__ and __getitem__)")
        self.batch_size = batch_size or getattr(datamodule, "batch_size", None) or 128
        if self.batch_size < 2:
            raise ValueError(f"the scoring batch size must be >= 2, got {self.batch_size}")
        self.batch_size = min(self.batch_size, len(self.dataset))
        self.policy, self.seed, self.device = policy, seed, device
        self._fixed = self._draw(0) if policy == "fixed" else None

    def _draw(self, trial: int) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + trial)
            indices = torch.randperm(len(self.dataset))[: self.batch_size].tolist()
            inputs, targets = default_collate([self.dataset[i] for i in indices])[:2]
        return inputs.to(self.device), torch.as_tensor(targets).to(self.device)

    def __call__(self, trial: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._fixed if self._fixed is not None else self._draw(trial)
