"""The protocol every candidate space follows."""
from __future__ import annotations

from typing import Hashable, Protocol, Sequence, runtime_checkable

from torch import nn


@runtime_checkable
class CandidateSpace(Protocol):
    """A finite or sampled set of hashable candidate specs that can be built into networks.

    ``name`` identifies the space in configs and result files; ``describe(candidate)`` returns the
    JSON-friendly form stored in results (for NB201: the arch string); ``sample`` is reproducible
    for a given seed.
    """

    name: str

    def sample(self, n: int, seed: int | None = None, replace: bool = True) -> list[Hashable]: ...

    def build(self, candidate: Hashable, num_classes: int = 10, **kwargs) -> nn.Module: ...

    def describe(self, candidate: Hashable) -> str: ...

    def parse(self, text: str | int) -> Hashable: ...


def sample_indices(size: int, n: int, seed: int | None, replace: bool) -> Sequence[int]:
    """``n`` indices of ``range(size)``, uniformly, reproducible for a seed (numpy's PCG64)."""
    import numpy as np

    if n < 0:
        raise ValueError(f"cannot sample a negative number of candidates (n={n})")
    if not replace and n > size:
        raise ValueError(f"cannot draw {n} distinct candidates from a space of {size}")
    rng = np.random.default_rng(seed)
    return [int(i) for i in rng.choice(size, size=n, replace=replace)]
