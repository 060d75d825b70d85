"""The base class every candidate space derives from."""
from __future__ import annotations

import importlib
import inspect
from typing import Callable, Hashable, Iterator, Sequence

import torch
from torch import nn

from .._seeding import seeded


class CandidateSpace:
    """A set of hashable candidate specs that can be built into networks.

    Subclasses implement ``sample`` and ``build``; a finite space also ``__len__`` and
    ``__iter__`` (for exhaustive search), and ``mutate`` enables evolution. ``name`` identifies
    the space in result files; ``describe`` gives the readable form stored beside each record;
    ``parse`` turns user text (CLI, YAML) into a candidate. Configured from YAML with
    ``class_path``/``init_args``.
    """

    name = "custom"

    def sample(self, n: int, seed: int | None = None, replace: bool = True) -> list[Hashable]:
        raise NotImplementedError

    def build(self, candidate: Hashable, num_classes: int = 10, **options) -> nn.Module:
        raise NotImplementedError

    def describe(self, candidate: Hashable) -> str:
        return str(candidate)

    def parse(self, text: str | int) -> Hashable:
        return text

    def config(self, candidate: Hashable | None = None) -> dict | None:
        """How to make this space again: ``{"class_path": ..., "init_args": {...}}`` (YAML's form), or None when
        it cannot say. A checkpoint of :class:`~lightning_epe.CandidateModule` stores it, so that
        ``load_from_checkpoint`` rebuilds the network without the space. ``candidate``: a space may describe
        only what that candidate needs. The default: the class, when its constructor needs no arguments."""
        required = [p for p in inspect.signature(type(self).__init__).parameters.values()
                    if p.name != "self" and p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        return None if required else {"class_path": _dotted(type(self)), "init_args": {}}

    def __iter__(self) -> Iterator[Hashable]:
        raise TypeError(f"{type(self).__name__} cannot be enumerated; use a sampling strategy")

    def builder(self, device: torch.device | str = "cpu", num_classes: int = 10, **options) -> "Builder":
        """What a search makes its candidates' networks with: ``builder.build(candidate, seed)`` is the
        network of ``torch.manual_seed(seed); space.build(candidate, num_classes, **options)`` on
        ``device``. This one builds each anew; a space may return a faster one that gives the same
        networks bit for bit (NB201: :class:`~lightning_epe.spaces.nb201_builder.NB201Builder`)."""
        return Builder(self, device, num_classes, **options)


class Builder:
    """Builds each candidate anew: ``space.build`` under the candidate's seed, then moved to ``device``.

    The global RNG is left as it was (``seeded``). ``network`` is the last network built (also when
    moving it failed: errors name it); ``close()`` frees what the builder holds.
    """

    def __init__(self, space: CandidateSpace, device: torch.device | str = "cpu", num_classes: int = 10,
                 **options):
        self.space, self.device = space, torch.device(device)
        self.num_classes, self.options = num_classes, options
        self.network: nn.Module | None = None

    def build(self, candidate: Hashable, seed: int) -> nn.Module:
        self.network = None  # (the previous one can be freed first)
        with seeded(seed, self.device):
            self.network = self.space.build(candidate, num_classes=self.num_classes, **self.options)
        return self.network.to(self.device)

    def close(self) -> None:
        self.network = None


def _dotted(obj) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def space_from_config(config: dict) -> CandidateSpace:
    """The space of a ``{"class_path": ..., "init_args": {...}}`` (:meth:`CandidateSpace.config`)."""
    if not isinstance(config, dict) or "class_path" not in config:
        raise ValueError(f"a space is a CandidateSpace or a dict {{'class_path': ..., 'init_args': {{...}}}}, got "
                         f"{config!r}")
    module, _, name = config["class_path"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if not (isinstance(cls, type) and issubclass(cls, CandidateSpace)):
        raise TypeError(f"{config['class_path']} is not a CandidateSpace")
    return cls(**config.get("init_args", {}))


def sample_indices(size: int, n: int, seed: int | None, replace: bool) -> Sequence[int]:
    """``n`` indices of ``range(size)``, uniformly, reproducible for a seed (numpy's PCG64)."""
    import numpy as np

    if n < 0:
        raise ValueError(f"cannot sample a negative number of candidates (n={n})")
    if not replace and n > size:
        raise ValueError(f"cannot draw {n} distinct candidates from a space of {size}")
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(size, size=n, replace=replace)]


def sample_drawn(n: int, seed: int | None, replace: bool, draw: Callable, key: Callable) -> list:
    """``n`` candidates from ``draw(rng)`` (a numpy Generator seeded with ``seed``; it returns None for a draw to
    reject); ``replace=False``: no two with the same ``key`` (e.g. the same network up to isomorphism)."""
    import numpy as np

    if n < 0:
        raise ValueError(f"cannot sample a negative number of candidates (n={n})")
    rng = np.random.default_rng(seed)
    out, seen = [], set()
    while len(out) < n:
        candidate = draw(rng)
        if candidate is None:
            continue
        if not replace:
            k = key(candidate)
            if k in seen:
                continue
            seen.add(k)
        out.append(candidate)
    return out
