"""EPEScore: score a LightningModule's network at initialisation, before the first optimiser step."""
from __future__ import annotations

import contextlib
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.seed import isolate_rng

from ..scores import score_info
from ..scores.draws import Draws, reinitialising, score_draws


class EPEScore(L.Callback):
    """Scores the model on one training batch when training starts, logs and keeps the score.

    A thin hook over the scoring function (as Lightning's tuner callbacks): it runs in
    ``on_train_start`` (optimisers exist, no step taken yet), under ``isolate_rng`` so training
    draws the same random numbers as without it, with autograd on and autocast off, on the
    module's device. The model is left exactly as found.

    Args:
        score: a registered score name (default ``"epe"``).
        batch: an ``(inputs, targets)`` pair to score on (or a list of pairs, one per batch draw);
            default: the first batches of the train dataloader.
        min_score: stop the fit before any step if the score is below this (or NaN).
        score_options: extra keyword arguments for the score (e.g. ``{"class_count": "true"}``).
        draws: score k times and combine (``Draws(k=4, over="batches")``, or a dict / int k):
            over ``batches`` (the first k batches), ``inits`` (the module as it is, then k - 1
            re-initialisations by each layer's ``reset_parameters``, seeded from ``seed``; the
            weights are restored after) or ``both``; combined by ``mean`` or ``median``.
        seed: seeds the re-initialisations of draws over inits.

    With a rank ensemble (``score="ensemble"``), a single network has no rank: the callback logs
    each member score as ``<member>_score`` and keeps the dict in ``score``; ``min_score`` is refused.
    With draws, ``values`` keeps every draw and ``score`` their combination.
    """

    def __init__(self, score: str = "epe", batch: Any = None, min_score: float | None = None,
                 score_options: dict | None = None, draws: Draws | dict | int | None = None, seed: int = 0):
        self.score_name = score
        self.info = score_info(score)
        if self.info.relative and min_score is not None:
            raise ValueError(f"min_score needs an absolute score; {score!r} ranks candidates against each other")
        self.draws = Draws.of(draws)
        if self.draws.relative:
            raise ValueError("draws combine='rank' ranks candidates against each other; a callback scores one "
                             "network: use 'mean' or 'median'")
        self.batch = batch
        self.min_score = min_score
        self.score_options = dict(score_options or {})
        self.seed = seed
        self.values: list[float | dict[str, float]] = []
        self.score: float | dict[str, float] | None = None

    def _batches(self, trainer: L.Trainer) -> list:
        """The batches draws score on: ``batch=`` (one pair or a list of pairs), or the train dataloader's first."""
        needed = self.draws.num_batches
        if self.batch is not None:
            given = [self.batch] if _is_batch(self.batch) else list(self.batch)
        else:
            loader = trainer.train_dataloader
            if loader is None:
                raise RuntimeError("EPEScore needs a train dataloader or a batch= to score on")
            batches = iter(loader)
            given = [b for _, b in zip(range(needed), batches)]
        if len(given) < needed:
            raise ValueError(f"EPEScore with {self.draws.k} draws over {self.draws.over} needs {needed} batches, "
                             f"got {len(given)}")
        for batch in given:
            if not _is_batch(batch):
                raise TypeError(
                    f"EPEScore scores (inputs, targets, ...) tensor batches, got a {type(batch).__name__}; "
                    "pass batch=(inputs, targets) to score on"
                )
        return given[:needed]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with isolate_rng():
            device = pl_module.device
            batches = [(b[0].to(device), b[1].to(device)) for b in self._batches(trainer)]
            inits = contextlib.nullcontext(None) if self.draws.over == "batches" else reinitialising(pl_module)
            with inits as build:
                self.values = score_draws(build, batches, self.draws, score=self.score_name, seed=self.seed,
                                          model=pl_module, device=device, **self.score_options)
        value = self.draws.combine_values(self.values)
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


def _is_batch(batch: Any) -> bool:
    return (isinstance(batch, (tuple, list)) and len(batch) >= 2
            and isinstance(batch[0], torch.Tensor) and isinstance(batch[1], torch.Tensor))
