"""Draws: one score computed over several batches and/or initialisations, then combined.

A training-free score of one network on one batch is noisy: EPE rankings of the same NB201 cells
agree at Kendall tau ~0.87 between two batches of 128 CIFAR-10 images and ~0.76 between two
initialisations (docs/benchmarks/README.md). ``Draws(k, over, combine)`` scores each candidate k
times and combines the values:

* ``over="batches"``: one initialisation; draw j scores batch j.
* ``over="inits"``: one batch; draw j initialises the network from ``draw_seed(seed, j)``.
* ``over="both"``: draw j uses batch j and initialisation j.

Draw 0 is always the plain score (batch 0, the candidate's own seed), so ``k=1`` is today's score.
Combination: ``mean`` or ``median`` of the draws (per candidate), or ``rank``: the mean over draws
of the candidate's rank among the candidates in that draw (relative, like a rank ensemble).
Non-finite draws are left out of every rule; a candidate with no finite draw scores NaN.
"""
from __future__ import annotations

import contextlib
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Mapping, Sequence, Union

import numpy as np
import torch
from torch import nn

from .._seeding import seeded
from ._validation import score_value
from .ranking import average_ranks
from .registry import score_info

OVER = ("batches", "inits", "both")
RULES = ("mean", "median", "rank")

Batch = tuple[torch.Tensor, torch.Tensor]
DrawValue = Union[float, Mapping[str, float]]  # a score, or the member scores of an ensemble


@dataclass(frozen=True)
class Draws:
    """How many times a candidate is scored, over what, and how the values are combined.

    Attributes:
        k: number of draws (>= 1); the cost is k scores. 1 is the plain score.
        over: ``batches`` (same weights, k batches), ``inits`` (same batch, k initialisations) or
            ``both`` (draw j: batch j and initialisation j).
        combine: ``mean``, ``median`` (of each candidate's draws) or ``rank`` (mean over draws of the
            candidate's normalised rank among the candidates scored; relative).
    """

    k: int = 1
    over: Literal["batches", "inits", "both"] = "batches"
    combine: Literal["mean", "median", "rank"] = "mean"

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, numbers.Integral) or self.k < 1:
            raise ValueError(f"draws.k must be an int >= 1 (1 = a plain score), got {self.k!r}")
        object.__setattr__(self, "k", int(self.k))  # e.g. a numpy integer
        if self.over not in OVER:
            raise ValueError(f"draws.over must be one of {', '.join(OVER)}, got {self.over!r}")
        if self.combine not in RULES:
            raise ValueError(f"draws.combine must be one of {', '.join(RULES)}, got {self.combine!r}")

    @classmethod
    def of(cls, value: "Draws | Mapping | int | None") -> "Draws":
        """A ``Draws`` from a ``Draws``, a dict such as ``{"k": 4, "over": "batches"}``, an int k, or None (k=1)."""
        if value is None:
            return cls()
        if isinstance(value, Draws):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"k", "over", "combine"}
            if unknown:
                raise ValueError(f"unknown draws key(s) {sorted(unknown)}; accepted: k, over, combine")
            return cls(**value)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return cls(k=int(value))
        raise TypeError(f"draws must be a Draws, a dict with k/over/combine, an int k or None, got {value!r}")

    @property
    def relative(self) -> bool:
        """True for ``combine="rank"``: a value only means something among the candidates it was ranked with."""
        return self.combine == "rank"

    @property
    def num_batches(self) -> int:
        return 1 if self.over == "inits" else self.k

    def batch_of(self, draw: int) -> int:
        """The batch draw ``draw`` scores (0 .. num_batches - 1)."""
        return 0 if self.over == "inits" else draw

    def init_of(self, draw: int) -> int:
        """The initialisation draw ``draw`` scores (0 .. k - 1; always 0 over batches)."""
        return 0 if self.over == "batches" else draw

    def combine_values(self, values: Sequence[DrawValue]) -> DrawValue:
        """One candidate's draws combined by ``mean`` or ``median`` (member by member for an ensemble)."""
        if self.relative:
            raise ValueError("combine='rank' ranks candidates against each other: use rank_draws(table)")
        if values and isinstance(values[0], Mapping):
            return {name: self.combine_values([v[name] for v in values]) for name in values[0]}
        finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        if not finite:
            return math.nan
        return float(np.mean(finite) if self.combine == "mean" else np.median(finite))


def rank_draws(table: Sequence[Sequence[float | None]]) -> list[float]:
    """``combine="rank"``: per candidate (row), the mean over draws (columns) of its rank among the rows.

    Ranks are normalised to (0, 1] (1 = best in that draw; ties share their average rank) over the
    candidates whose draw is finite; non-finite draws are left out, so a candidate with no finite
    draw gets NaN. Higher is better.
    """
    if not table:
        return []
    values = np.array([[math.nan if v is None else float(v) for v in row] for row in table], dtype=float)
    if values.ndim != 2:
        raise ValueError("rank_draws needs the same number of draws for every candidate")
    ranks = np.full(values.shape, np.nan)
    for j in range(values.shape[1]):
        finite = np.isfinite(values[:, j])
        if finite.any():
            ranks[finite, j] = average_ranks(values[finite, j]) / finite.sum()
    counts = np.isfinite(ranks).sum(axis=1)
    totals = np.nansum(ranks, axis=1)
    return [float(t / c) if c else math.nan for t, c in zip(totals, counts)]


def draw_seed(seed: int, init: int) -> int:
    """The seed of initialisation ``init`` of a candidate seeded ``seed`` (``init`` 0 keeps ``seed``)."""
    if init == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(init)]).generate_state(1, np.uint64)[0] >> 1)


def score_draws(build: Callable[[], nn.Module] | None, batches: Sequence[Batch] | Callable[[int], Batch],
                draws: "Draws | Mapping | int | None" = None, *, score: str = "epe", seed: int = 0,
                model: nn.Module | None = None, device: torch.device | str | None = None,
                **options) -> list[DrawValue]:
    """The k draws of ``score`` for one candidate, in draw order (combine them with ``Draws.combine_values``).

    Args:
        build: makes the candidate's network; called under ``seeded(draw_seed(seed, i))`` for each
            initialisation i that is needed (one over batches, k otherwise). Draw j's score is
            computed under ``seeded(draw_seed(seed, j))`` too: a score that draws random numbers
            (AZ-NAS's and VKDNW's re-initialisation and noise input) gives the same value for
            the same candidate, whatever ran before it (the global RNG is restored afterwards).
        batches: the batches, as a sequence of ``(inputs, targets)`` (at least ``num_batches``) or a
            function ``j -> (inputs, targets)``; put them on the device once, they are reused.
        draws: a :class:`Draws` (or a dict / int k; default k=1).
        score: a registered score name; ``options`` are its keyword arguments.
        seed: the candidate's seed (initialisation 0).
        model: the network of initialisation 0, if it exists already (then ``build`` is only
            called for the other initialisations, and may be None when there are none).
        device: where the networks run (default: the first batch's device).
    """
    draws = Draws.of(draws)
    fn = score_info(score).fn
    if not callable(batches):
        needed = draws.num_batches
        if len(batches) < needed:
            raise ValueError(f"{draws.k} draws over {draws.over} need {needed} batches, got {len(batches)}")
        batches = batches.__getitem__
    first = batches(0)
    device = torch.device(device) if device is not None else first[0].device
    values: list[DrawValue] = []
    network, network_init = model, 0 if model is not None else None
    for draw in range(draws.k):
        init = draws.init_of(draw)
        if init != network_init:
            if build is None:
                raise ValueError(f"{draws.k} draws over {draws.over} need build= to make initialisation {init}")
            network = None  # the previous draw's network can be freed before the next is built
            with seeded(draw_seed(seed, init), device):
                network = build()
            network.to(device)
            network_init = init
        inputs, targets = first if draws.batch_of(draw) == 0 else batches(draws.batch_of(draw))
        with seeded(draw_seed(seed, draw), device):  # a score that draws (a re-initialisation, noise) repeats
            value = fn(network, inputs, targets, **options)
        values.append(score_value(value, score, fn))
    return values


@contextlib.contextmanager
def reinitialising(model: nn.Module) -> Iterator[Callable[[], nn.Module]]:
    """Yields ``build()``, which draws ``model``'s parameters again in place; restores them on exit.

    ``build`` calls every layer's ``reset_parameters`` (PyTorch's default initialisation of each
    layer, not a library's own scheme such as timm's truncated normals) and returns ``model``: the
    same parameter objects, so optimisers keep working. On exit every parameter and buffer holds
    its value from before. Raises if no layer of ``model`` can reset itself.
    """
    layers = [m for m in model.modules() if callable(getattr(m, "reset_parameters", None))]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer with reset_parameters(): it cannot be "
                         "initialised again; use draws over batches")
    saved = {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items()}

    def build() -> nn.Module:
        for layer in layers:
            layer.reset_parameters()
        return model

    try:
        yield build
    finally:
        with torch.no_grad():
            for name, tensor in model.state_dict(keep_vars=True).items():
                tensor.copy_(saved[name])


def score_module(model: nn.Module, batches: Sequence[Batch], draws: "Draws | Mapping | int | None" = None, *,
                 score: str = "epe", seed: int = 0, **options) -> list[DrawValue]:
    """The k draws of ``score`` for an existing network, on its device (what the callback computes).

    Draws over batches score ``model`` on ``batches[j]``; draws over inits score ``model`` as it is,
    then re-initialised in place (``reinitialising``: each layer's ``reset_parameters``, seeded from
    ``draw_seed(seed, j)``), with every parameter and buffer restored afterwards. The batches are
    moved to the model's device. Combine the values with ``Draws.combine_values``.
    """
    draws = Draws.of(draws)
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), torch.device("cpu"))
    moved = [_pair(b, j, score) for j, b in enumerate(_batch_list(batches))]
    moved = [(x.to(device), None if y is None else y.to(device)) for x, y in moved]
    inits = contextlib.nullcontext(None) if draws.over == "batches" else reinitialising(model)
    with inits as build:
        return score_draws(build, moved, draws, score=score, seed=seed, model=model, device=device, **options)


def _batch_list(batches) -> list:
    if isinstance(batches, torch.Tensor) or not isinstance(batches, Sequence):
        raise TypeError(f"score_module scores a list of (inputs, targets) batches, got {_what(batches)}: pass "
                        "[(inputs, targets)] (targets None for a score that needs no labels)")
    return list(batches)


def _pair(batch, j: int, score: str) -> tuple:
    """Batch ``j`` of ``score_module`` as ``(inputs, targets)``; a bare tensor (whose first two rows would
    be read as inputs and targets) or a 1-tuple is refused."""
    if (isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor)
            and (batch[1] is None or isinstance(batch[1], torch.Tensor))):
        return batch[0], batch[1]
    labels = "" if not score_info(score).needs_labels else f" ({score!r} needs labels)"
    raise TypeError(f"score_module: batch {j} must be an (inputs, targets) pair of tensors{labels}, got "
                    f"{_what(batch)}; pass [(inputs, targets)] (targets None for a score that needs no labels)")


def _what(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"
