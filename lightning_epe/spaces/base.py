"""The base class every candidate space derives from."""
from __future__ import annotations

from typing import Hashable, Iterator, Sequence

from torch import nn


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

    def __iter__(self) -> Iterator[Hashable]:
        raise TypeError(f"{type(self).__name__} cannot be enumerated; use a sampling strategy")


def sample_indices(size: int, n: int, seed: int | None, replace: bool) -> Sequence[int]:
    """``n`` indices of ``range(size)``, uniformly, reproducible for a seed (numpy's PCG64)."""
    import numpy as np

    if n < 0:
        raise ValueError(f"cannot sample a negative number of candidates (n={n})")
    if not replace and n > size:
        raise ValueError(f"cannot draw {n} distinct candidates from a space of {size}")
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(size, size=n, replace=replace)]
