"""EPEScore: score a LightningModule's network at initialisation, before the first optimiser step."""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.seed import isolate_rng

from ..scores import get_score


class EPEScore(L.Callback):
    """Scores the model on one training batch when training starts, logs and keeps the score.

    A thin hook over the scoring function (as Lightning's tuner callbacks): it runs in
    ``on_train_start`` (optimisers exist, no step taken yet), under ``isolate_rng`` so training
    draws the same random numbers as without it, with autograd on and autocast off, on the
    module's device. The model is left exactly as found.

    Args:
        score: a registered score name (default ``"epe"``).
        batch: an ``(inputs, targets)`` pair to score on; default: the first batch of the train
            dataloader.
        min_score: stop the fit before any step if the score is below this (or NaN).
        score_options: extra keyword arguments for the score (e.g. ``{"class_count": "true"}``).
    """

    def __init__(self, score: str = "epe", batch: tuple[torch.Tensor, torch.Tensor] | None = None,
                 min_score: float | None = None, score_options: dict | None = None):
        self.score_name = score
        self.score_fn = get_score(score)
        self.batch = batch
        self.min_score = min_score
        self.score_options = dict(score_options or {})
        self.score: float | None = None

    def _batch(self, trainer: L.Trainer) -> Any:
        if self.batch is not None:
            return self.batch
        loader = trainer.train_dataloader
        if loader is None:
            raise RuntimeError("EPEScore needs a train dataloader or a batch= to score on")
        return next(iter(loader))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with isolate_rng():
            batch = self._batch(trainer)
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2
                    and isinstance(batch[0], torch.Tensor) and isinstance(batch[1], torch.Tensor)):
                raise TypeError(
                    f"EPEScore scores (inputs, targets, ...) tensor batches, got a {type(batch).__name__}; "
                    "pass batch=(inputs, targets) to score on"
                )
            inputs, targets = batch[0].to(pl_module.device), batch[1].to(pl_module.device)
            self.score = float(self.score_fn(pl_module, inputs, targets, **self.score_options))
        trainer.callback_metrics[f"{self.score_name}_score"] = torch.tensor(self.score)
        for logger in trainer.loggers:
            logger.log_metrics({f"{self.score_name}_score": self.score}, step=trainer.global_step)
        rank_zero_info(f"{self.score_name} score at initialisation: {self.score:.4f}")
        if self.min_score is not None and not (self.score >= self.min_score):
            rank_zero_warn(
                f"{self.score_name} score {self.score} is below min_score={self.min_score} (or NaN): "
                "stopping before training. Pre-select architectures before spending compute on them."
            )
            trainer.should_stop = True
        if math.isnan(self.score):
            rank_zero_warn(f"the {self.score_name} score is NaN: the network's input gradients are degenerate")
