"""CandidateModule: the LightningModule that trains one candidate of a space for classification."""
from __future__ import annotations

import importlib
from typing import Callable, Hashable

import lightning as L
import torch
import torchmetrics
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import nn

from .scores import logits_of
from .spaces import CandidateSpace, NB201Space
from .spaces.base import space_from_config

OPTIMIZERS = ("sgd", "adamw")
SCHEDULERS = ("cosine", "none")


class CandidateModule(L.LightningModule):
    """Builds the network of ``candidate`` from ``space`` and trains it with cross-entropy.

    The defaults are NAS-Bench-201's training recipe: SGD, momentum 0.9, Nesterov, lr 0.1,
    weight decay 5e-4, cosine annealing to 0 over the whole fit (per step).

    Args:
        candidate: a candidate of the space (NB201: index, numeric string or arch string).
        num_classes: number of classes of the data.
        space: the candidate space (default: NAS-Bench-201), or its ``{"class_path": ..., "init_args": ...}``.
            The checkpoint stores what rebuilds the candidate (``space.config(candidate)``: NB201, timm, a list of
            timm names or importable factories), so ``CandidateModule.load_from_checkpoint(path)`` needs no space.
        build_options: extra keyword arguments for ``space.build`` (NB201: ``C``, ``N``, ``in_channels``).
        optimizer: ``sgd`` or ``adamw``.
        lr: initial learning rate.
        momentum: SGD momentum.
        nesterov: SGD Nesterov momentum.
        weight_decay: weight decay.
        scheduler: ``cosine`` (per-step cosine to 0) or ``none``.
    """

    def __init__(
        self,
        candidate: Hashable,
        num_classes: int = 10,
        space: CandidateSpace | dict | None = None,
        build_options: dict | None = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        scheduler: str = "cosine",
    ):
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")
        if scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {scheduler!r}; accepted: {', '.join(SCHEDULERS)}")
        self.save_hyperparameters(ignore=["space"])
        if isinstance(space, dict):  # a checkpoint's (or YAML's) description of the space
            space = space_from_config(space)
        self.space = space if space is not None else NB201Space()
        self.hparams["space"] = self.space.config(candidate)  # None: load_from_checkpoint needs space=
        # Built here, before any optimiser exists, so a search can choose the candidate.
        self.net: nn.Module = self.space.build(candidate, num_classes=num_classes, **(build_options or {}))
        metric = lambda: torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)  # noqa: E731
        self.train_acc, self.val_acc, self.test_acc = metric(), metric(), metric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return logits_of(self.net(x))

    def _step(self, batch, stage: str, accuracy: torchmetrics.Metric) -> torch.Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        accuracy(logits, y)
        on_step = stage == "train"
        self.log(f"{stage}_loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        self.log(f"{stage}_acc", accuracy, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._step(batch, "test", self.test_acc)

    def configure_optimizers(self):
        h = self.hparams
        if h.optimizer == "sgd":
            opt = torch.optim.SGD(self.parameters(), lr=h.lr, momentum=h.momentum, nesterov=h.nesterov,
                                  weight_decay=h.weight_decay)
        else:
            opt = torch.optim.AdamW(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        if h.scheduler == "none":
            return opt
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def fit_and_test(trainer: L.Trainer, datamodule, candidate: Hashable, *, space: CandidateSpace | None = None,
                 num_classes: int = 10, build_options: dict | None = None, module: Callable | str | None = None,
                 test: bool = True, **module_options) -> dict[str, float]:
    """Train ``candidate`` with ``trainer`` on ``datamodule``, test it, return the test metrics (floats).

    The one way to train a candidate: ``ArchitectureSearch.fit`` and the ``fit``/``search`` commands
    call it. ``module``: None for :class:`CandidateModule` (``module_options``: its optimiser settings ...), or
    your LightningModule class or a factory (or its dotted path), called as ``module(network, **module_options)``
    with the candidate's network, built untrained from the global RNG (``seed_everything``). A module without a
    ``test_step`` is trained and not tested (empty metrics); ``test=False`` trains only (the shortlist's short fits).
    """
    if module is None:
        model = CandidateModule(candidate, num_classes=num_classes, space=space, build_options=build_options,
                                **module_options)
    else:
        factory = _import(module) if isinstance(module, str) else module
        network = (space or NB201Space()).build(candidate, num_classes=num_classes, **(build_options or {}))
        model = factory(network, **module_options)
        if not isinstance(model, L.LightningModule):
            raise TypeError(f"module={module!r} returned {type(model).__name__}, not a LightningModule: pass your "
                            "LightningModule class, or a function network -> LightningModule")
    trainer.fit(model, datamodule=datamodule)
    if not test or not is_overridden("test_step", model):
        return {}
    return {k: float(v) for k, v in trainer.test(model, datamodule=datamodule, verbose=False)[0].items()}


def _import(path: str) -> Callable:
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"module {path!r} is not an importable dotted path of a LightningModule class or factory "
                         f"({type(err).__name__}: {err})") from None
