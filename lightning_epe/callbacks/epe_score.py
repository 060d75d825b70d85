"""EPEScore: score a LightningModule's network at initialisation, before the first optimiser step."""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.seed import isolate_rng

from ..deprecation import deprecated
from ..scores import score_info, score_module
from ..scores.draws import Draws, DrawValue


class EPEScore(L.Callback):
    """Scores the model on training batches when training starts, logs and keeps the score.

    A thin hook over :func:`lightning_epe.scores.score_module` (as Lightning's ``LearningRateFinder``
    over ``lr_find``): it runs in ``on_train_start`` (optimisers exist, no step taken yet), under
    ``isolate_rng`` so training draws the same random numbers as without it, on the module's device.
    The model is left exactly as found.

    Args:
        score: a registered score name (default ``"epe"``).
        batch: an ``(inputs, targets)`` pair to score on (or a list of pairs, one per batch draw);
            default: the first batches of the train dataloader.
        min_score: stop the fit before any step if the score is below this (or NaN) on any process.
        score_options: extra keyword arguments for the score (e.g. ``{"class_count": "true"}``).
        draws: score k times and combine (``Draws(k=4, over="batches")``, or a dict / int k):
            over ``batches`` (the first k batches), ``inits`` (the module as it is, then k - 1
            re-initialisations by each layer's ``reset_parameters``, seeded from ``seed``; the
            weights are restored after) or ``both``; combined by ``mean`` or ``median``.
        seed: seeds the re-initialisations of draws over inits.

    After the fit starts, ``value`` holds the score (the combination of the draws) and ``values``
    every draw. With a rank ensemble (``score="ensemble"``), a single network has no rank: the
    callback logs each member score as ``<member>_score`` and ``value`` is the dict;
    ``min_score`` is refused.
    """

    def __init__(self, score: str = "epe", batch: Any = None, min_score: float | None = None,
                 score_options: dict | None = None, draws: Draws | dict | int | None = None, seed: int = 0):
        self._score_name = score
        self._info = score_info(score)
        if self._info.relative and min_score is not None:
            raise ValueError(f"min_score needs an absolute score; {score!r} ranks candidates against each other")
        self._draws = Draws.of(draws)
        if self._draws.relative:
            raise ValueError("draws combine='rank' ranks candidates against each other; a callback scores one "
                             "network: use 'mean' or 'median'")
        self._batch = batch
        self._min_score = min_score
        self._score_options = dict(score_options or {})
        self._seed = seed
        self.values: list[DrawValue] = []
        self.value: DrawValue | None = None

    @property
    def score(self) -> DrawValue | None:
        """Deprecated (0.1) name of :attr:`value`."""
        deprecated("EPEScore.score is now EPEScore.value")
        return self.value

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with isolate_rng():
            self.values = score_module(pl_module, self._batches(trainer), self._draws, score=self._score_name,
                                       seed=self._seed, **self._score_options)
        value = self._draws.combine_values(self.values)
        self.value = {k: float(v) for k, v in value.items()} if self._info.relative else float(value)
        self._log(trainer)
        if self._info.relative:
            return
        if math.isnan(self.value):
            rank_zero_warn(f"the {self._score_name} score is NaN: the network's input gradients are degenerate")
        below = self._min_score is not None and not (self.value >= self._min_score)
        if trainer.strategy.reduce_boolean_decision(below, all=False):  # one process below: every one stops
            rank_zero_warn(
                f"{self._score_name} score {self.value} is below min_score={self._min_score} (or NaN) on at least "
                "one process: stopping before training. Pre-select architectures before spending compute on them."
            )
            trainer.should_stop = True

    def _log(self, trainer: L.Trainer) -> None:
        metrics = ({f"{k}_score": v for k, v in self.value.items()} if self._info.relative
                   else {f"{self._score_name}_score": self.value})
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        rank_zero_info("scores at initialisation: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def _batches(self, trainer: L.Trainer) -> list:
        """The batches draws score on: ``batch=`` (one pair or a list of pairs), or the train dataloader's first."""
        needed = self._draws.num_batches
        if self._batch is not None:
            given = [self._batch] if _is_batch(self._batch) else list(self._batch)
        else:
            loader = trainer.train_dataloader
            if loader is None:
                raise RuntimeError("EPEScore needs a train dataloader or a batch= to score on")
            given = [b for _, b in zip(range(needed), iter(loader))]
        if len(given) < needed:
            raise ValueError(f"EPEScore with {self._draws.k} draws over {self._draws.over} needs {needed} batches, "
                             f"got {len(given)}")
        for batch in given:
            if not _is_batch(batch):
                raise TypeError(
                    f"EPEScore scores (inputs, targets, ...) tensor batches, got a {type(batch).__name__}; "
                    "pass batch=(inputs, targets) to score on"
                )
        return given[:needed]


def _is_batch(batch: Any) -> bool:
    return (isinstance(batch, (tuple, list)) and len(batch) >= 2
            and isinstance(batch[0], torch.Tensor) and isinstance(batch[1], torch.Tensor))
