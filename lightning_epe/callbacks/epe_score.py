"""EPEScore: score a LightningModule's network at initialisation, before the first optimiser step."""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.seed import isolate_rng

from ..scores import score_info


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

    With a rank ensemble (``score="ensemble"``), a single network has no rank: the callback logs
    each member score as ``<member>_score`` and keeps the dict in ``score``; ``min_score`` is refused.
    """

    def __init__(self, score: str = "epe", batch: tuple[torch.Tensor, torch.Tensor] | None = None,
                 min_score: float | None = None, score_options: dict | None = None):
        self.score_name = score
        self.info = score_info(score)
        if self.info.relative and min_score is not None:
            raise ValueError(f"min_score needs an absolute score; {score!r} ranks candidates against each other")
        self.batch = batch
        self.min_score = min_score
        self.score_options = dict(score_options or {})
        self.score: float | dict[str, float] | None = None

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
            value = self.info.fn(pl_module, inputs, targets, **self.score_options)
        self.score = {k: float(v) for k, v in value.items()} if self.info.relative else float(value)
        metrics = ({f"{k}_score": v for k, v in self.score.items()} if self.info.relative
                   else {f"{self.score_name}_score": self.score})
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        rank_zero_info("scores at initialisation: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        if self.info.relative:
            return
        if self.min_score is not None and not (self.score >= self.min_score):
            rank_zero_warn(
                f"{self.score_name} score {self.score} is below min_score={self.min_score} (or NaN): "
                "stopping before training. Pre-select architectures before spending compute on them."
            )
            trainer.should_stop = True
        if math.isnan(self.score):
            rank_zero_warn(f"the {self.score_name} score is NaN: the network's input gradients are degenerate")
