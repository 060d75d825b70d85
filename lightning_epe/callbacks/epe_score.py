"""EPEScore: score a LightningModule's network at initialisation, before the first optimiser step."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
from typing import Any, Callable, Iterator

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.seed import isolate_rng

from ..deprecation import deprecated
from ..scores import score_info, score_module
from ..scores._validation import (
    check_output_selector,
    describe_output_selector,
    explain_error,
    nan_reason,
    selecting_output,
)
from ..scores.draws import Draws, DrawValue
from ..search._checks import MAX_SEED, check_int

PRECISIONS = ("float32", None)
#: The scales ``min_score`` can be given on: ``raw`` (the score as computed) and ``per_pair``.
SCALES = ("raw", "per_pair")
#: The largest per-pair value: -log(1e-5), every same-class pair of input gradients uncorrelated.
PER_PAIR_MAX = 11.512925464970229


def same_class_pairs(targets: torch.Tensor) -> int:
    """``sum_c n_c (n_c - 1)``: the ordered pairs of two different samples of the same class in a batch
    of labels ``targets`` (the terms an EPE score adds up, besides each sample with itself)."""
    counts = torch.bincount(torch.as_tensor(targets).reshape(-1).long().cpu())
    return int((counts * (counts - 1)).sum())


def epe_per_pair(score: float, targets: torch.Tensor) -> float:
    """An EPE score (the ``<= 100`` classes branch: ``sum_c |E_c|``) divided by :func:`same_class_pairs`:
    about the mean of ``-log(|r| + 1e-5)`` over the same-class pairs of input gradients, from 0 (the
    gradients of each class all alike) to 11.51 (uncorrelated). Unlike the score, it does not grow with
    the batch size or depend on the label mix. NaN when the batch has no two samples of one class."""
    pairs = same_class_pairs(targets)
    return float(score) / pairs if pairs else math.nan


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
        min_score: stop the fit before any step if the score is below this (or NaN) on any process
            (``min_epochs``/``min_steps`` of the Trainer are lifted for that fit: a refusal refuses), on the
            scale ``scale`` says.
        scale: the scale of ``min_score``. ``"raw"`` (default): the score as computed, which for EPE
            grows with the batch size (about as ``sum_c n_c^2``) and the label mix. ``"per_pair"`` (EPE
            only): the score divided by the same-class sample pairs of its batch
            (:func:`epe_per_pair`), from 0 to 11.51 whatever the batch size, so one threshold serves
            every batch size. The per-pair value of an EPE score is kept in ``per_pair`` and logged as
            ``epe_score_per_pair`` on either scale.
        score_options: extra keyword arguments for the score (e.g. ``{"class_count": "true"}``).
        draws: score k times and combine (``Draws(k=4, over="batches")``, or a dict / int k):
            over ``batches`` (the first k batches), ``inits`` (the module as it is, then k - 1
            re-initialisations by each layer's ``reset_parameters``, seeded from ``seed``; the
            weights are restored after) or ``both``; combined by ``mean`` or ``median``.
        seed: seeds the re-initialisations of draws over inits (an int in 0..4294967295).
        output: which part of the model's output is the logits (see ``ArchitectureSearch``): None
            (the default rule), an int index, an attribute or key name, or a function output -> logits.
        precision: ``"float32"`` (default): the network is scored in float32 whatever the Trainer's
            precision (``bf16-true``/``16-true`` parameters are viewed in float32 for the score, then
            put back; autocast is off), so a score does not depend on the precision of training.
            None: score the network as it is.

    A fit resumed from a checkpoint (``fit(ckpt_path=...)``) does not score the trained network:
    the score measured at initialisation is saved in the checkpoint (the callback's state) and
    restored from it; from a checkpoint without that state the callback says it is not scoring,
    and ``value`` stays None.

    After the fit starts, ``value`` holds the score (the combination of the draws) and ``values``
    every draw; ``refused`` says whether ``min_score`` stopped the fit (as EarlyStopping's
    ``stopped_epoch`` says it stopped one), and ``refusal`` why (the warning's text), None otherwise.
    With a rank ensemble (``score="ensemble"``), a single network has no rank: the
    callback logs each member score as ``<member>_score`` and ``value`` is the dict;
    ``min_score`` is refused.
    """

    def __init__(self, score: str = "epe", batch: Any = None, min_score: float | None = None,
                 score_options: dict | None = None, draws: Draws | dict | int | None = None, seed: int = 0,
                 output: Callable | int | str | None = None, precision: str | None = "float32", scale: str = "raw"):
        self._score_name = score
        self._info = score_info(score)
        if self._info.relative and min_score is not None:
            raise ValueError(f"min_score needs an absolute score; {score!r} ranks candidates against each other")
        if scale not in SCALES:
            raise ValueError(f"EPEScore scale must be 'raw' (min_score on the score as computed) or 'per_pair' "
                             f"(EPE divided by its batch's same-class pairs, 0..11.51), got {scale!r}")
        self._per_pair = score == "epe" and _sums_over_classes((score_options or {}).get("class_count", "official"))
        if scale == "per_pair" and not self._per_pair:
            raise ValueError(
                "EPEScore(scale='per_pair') normalises the EPE score of at most 100 classes (sum_c |E_c|) by its "
                f"batch's same-class pairs; score={score!r} with score_options={score_options!r} is not that: use "
                "score='epe' with class_count 'official' (the default) or an int <= 100, or scale='raw'")
        self._scale = scale
        self._draws = Draws.of(draws)
        if self._draws.relative:
            raise ValueError("draws combine='rank' ranks candidates against each other; a callback scores one "
                             "network: use 'mean' or 'median'")
        self._batch = batch
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, numbers.Real)
                                      or math.isnan(min_score)):
            raise ValueError(f"EPEScore min_score must be a number (on the scale {scale!r}) or None, got "
                             f"{min_score!r}" + (": NaN would stop every fit" if isinstance(min_score, float) else ""))
        self._min_score = min_score
        self._score_options = dict(score_options or {})
        self._seed = check_int("seed", seed, 0, MAX_SEED, flag="EPEScore(seed=...)")
        self._output = check_output_selector(output)
        if precision not in PRECISIONS:
            raise ValueError(f"EPEScore precision must be 'float32' (score in float32 whatever the Trainer's "
                             f"precision) or None (score the network as it is), got {precision!r}")
        self._precision = precision
        self._restored: dict | None = None
        self.values: list[DrawValue] = []
        self.value: DrawValue | None = None
        self.per_pair_values: list[float] = []
        self.per_pair: float | None = None
        self.refused = False
        self.refusal: str | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(score=self._score_name)

    def state_dict(self) -> dict:
        """The score measured at initialisation, saved in checkpoints (a resumed fit restores it)."""
        if self.value is None:
            return {}
        state = {"score": self._score_name, "value": self.value, "values": list(self.values), **self._how()}
        if self.per_pair is not None:
            state.update(per_pair=self.per_pair, per_pair_values=list(self.per_pair_values))
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("value") is not None:
            self._restored = dict(state_dict)

    def _how(self) -> dict:
        """What a value depends on besides the network and the batches: restored only when these match."""
        return {"score_options": self._score_options, "draws": dataclasses.asdict(self._draws), "seed": self._seed,
                "output": describe_output_selector(self._output)}

    def _changed(self, state: dict) -> list[str]:
        """What differs between this callback and the one that computed ``state`` (unknown keys: an earlier
        lightning-epe did not save them)."""
        how = json.loads(json.dumps(self._how(), default=str))  # (as a checkpoint holds it)
        return [key for key, value in how.items() if key not in state or state[key] != value]

    @property
    def score(self) -> DrawValue | None:
        """Deprecated (0.1) name of :attr:`value`."""
        deprecated("EPEScore.score is now EPEScore.value")
        return self.value

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = getattr(trainer, "global_step", 0)
        self.refused, self.refusal = False, None
        changed = self._changed(self._restored) if self._restored is not None else []
        if changed:
            rank_zero_warn(f"EPEScore: the checkpoint's {self._score_name} score was computed with other settings "
                           f"({', '.join(changed)} differ, or were not saved by an earlier lightning-epe), so it is "
                           f"not restored: scoring again now, at step {step}"
                           + (" (the network is trained: this is not the score at initialisation)" if step else ""))
            self._restored = None
        if self._restored is not None:  # fit(ckpt_path=...): the score at initialisation, from the checkpoint
            self.values, self.value = list(self._restored["values"]), self._restored["value"]
            self.per_pair_values = list(self._restored.get("per_pair_values", []))
            self.per_pair = self._restored.get("per_pair")
            if self.per_pair is None and self._scale == "per_pair":
                raise ValueError("EPEScore(scale='per_pair'): the checkpoint holds the score at initialisation "
                                 "without its per-pair value (saved by an earlier lightning-epe); use scale='raw'")
            rank_zero_info(f"EPEScore: the fit resumes at step {step}; the {self._score_name} score at initialisation "
                           "is restored from the checkpoint (the trained network is not scored)")
        elif step > 0 and not changed:
            rank_zero_warn(
                f"EPEScore is not scoring: the fit resumes at step {step} from a checkpoint without EPEScore's state "
                "(saved without this callback, or by lightning-epe < 0.2), so the network is trained and its score "
                "would not be the score at initialisation; value stays None and min_score is not applied"
            )
            return
        else:
            with isolate_rng():  # (drawing the batches from a shuffling loader takes random numbers too)
                batches = self._batches(trainer)
                self.values = self._score(pl_module, batches)
            value = self._draws.combine_values(self.values)
            self.value = {k: float(v) for k, v in value.items()} if self._info.relative else float(value)
            if self._per_pair:  # each draw divided by its own batch's pairs, then combined as the draws are
                self.per_pair_values = [epe_per_pair(v, batches[self._draws.batch_of(j)][1])
                                        for j, v in enumerate(self.values)]
                self.per_pair = float(self._draws.combine_values(self.per_pair_values))
        self._log(trainer)
        if self._info.relative:
            return
        if math.isnan(self.value):
            targets = batches[0][1] if self._restored is None else None
            rank_zero_warn(f"the {self._score_name} score is NaN: "
                           + nan_reason(self._score_name, self._score_options, targets, None, self._draws.k))
        gated = self.per_pair if self._scale == "per_pair" else self.value
        below = self._min_score is not None and not (gated >= self._min_score)
        if trainer.strategy.reduce_boolean_decision(below, all=False):  # one process below: every one stops
            what = (f"{self._score_name} score {self.value}" if self._scale == "raw" else
                    f"{self._score_name} score per same-class pair {gated} (score {self.value})")
            self.refused = True
            self.refusal = (f"{what} is below min_score={self._min_score} (or NaN) on at least one process: stopping "
                            "before training. Pre-select architectures before spending compute on them.")
            rank_zero_warn(self.refusal)
            _stop_now(trainer)

    def _score(self, pl_module: L.LightningModule, batches: list) -> list[DrawValue]:
        """The draws, in float32 (unless precision=None), with autocast off; a failure is re-raised with
        a note saying where, on what inputs, and what the score needs."""
        device = next((t.device for t in [*pl_module.parameters(), *pl_module.buffers()]), torch.device("cpu"))
        try:
            with selecting_output(self._output), _float32(pl_module, self._precision) as converted, \
                    torch.autocast(device_type=device.type, enabled=False):
                if converted:
                    rank_zero_info(f"EPEScore: scoring in float32 (the model's parameters are {converted}: the "
                                   "Trainer's precision); EPEScore(precision=None) scores the network as it is")
                return score_module(pl_module, batches, self._draws, score=self._score_name, seed=self._seed,
                                    **self._score_options)
        except Exception as err:
            inputs = batches[0][0] if batches and isinstance(batches[0][0], torch.Tensor) else None
            err.add_note(explain_error(err, pl_module, inputs, self._score_name,
                                       where=f"{type(pl_module).__name__} at the start of training (EPEScore)"))
            raise

    def _log(self, trainer: L.Trainer) -> None:
        metrics = ({f"{k}_score": v for k, v in self.value.items()} if self._info.relative
                   else {f"{self._score_name}_score": self.value})
        if self.per_pair is not None:
            metrics[f"{self._score_name}_score_per_pair"] = self.per_pair
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


def _sums_over_classes(class_count) -> bool:
    """Does EPE with this ``class_count`` take the ``<= 100`` classes branch (``sum_c |E_c|``) whatever the
    network? ("true" decides by the network's logits, unknown here.)"""
    if class_count == "official":
        return True
    return isinstance(class_count, int) and not isinstance(class_count, bool) and class_count <= 100


def _stop_now(trainer: L.Trainer) -> None:
    """Stop the fit before any step, even under ``min_epochs``/``min_steps`` (which would otherwise keep
    it training after the refusal)."""
    trainer.should_stop = True
    fit_loop = getattr(trainer, "fit_loop", None)
    if fit_loop is not None:
        fit_loop.min_epochs = 0
        fit_loop.epoch_loop.min_steps = None


@contextlib.contextmanager
def _float32(model: torch.nn.Module, precision: str | None) -> Iterator[str | None]:
    """Floating-point parameters and buffers that are not float32 viewed as float32 copies inside (the
    same Parameter objects: optimisers are unaffected), the originals put back on exit. Yields the
    dtypes converted ("bfloat16", ...), or None when nothing was."""
    if precision is None:
        yield None
        return
    params: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    buffers: list[tuple[torch.nn.Module, str, torch.Tensor]] = []
    dtypes: set[str] = set()
    try:
        for module in model.modules():
            for p in module._parameters.values():
                if p is not None and p.is_floating_point() and p.dtype != torch.float32 and id(p) not in params:
                    params[id(p)] = (p, p.data)
                    dtypes.add(str(p.dtype).replace("torch.", ""))
                    p.data = p.data.float()
            for name, b in module._buffers.items():
                if b is not None and b.is_floating_point() and b.dtype != torch.float32:
                    buffers.append((module, name, b))
                    module._buffers[name] = b.float()
        yield ", ".join(sorted(dtypes)) or None
    finally:
        for p, data in params.values():
            p.data = data
        for module, name, b in buffers:
            module._buffers[name] = b


def _is_batch(batch: Any) -> bool:
    return (isinstance(batch, (tuple, list)) and len(batch) >= 2
            and isinstance(batch[0], torch.Tensor) and isinstance(batch[1], torch.Tensor))
