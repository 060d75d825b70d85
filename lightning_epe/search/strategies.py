"""Search strategies: ask for the next candidate, tell its score.

Strategies are deterministic given their seed and the scores told to them, which is what makes a
search resumable: the runner replays stored scores and the strategy asks the same candidates again.
"""
from __future__ import annotations

import collections
import math
import random
from typing import Hashable, Protocol

STRATEGIES = ("random", "random_without_replacement", "exhaustive", "evolution")


class Strategy(Protocol):
    def ask(self) -> Hashable | None:
        """The next candidate, or None when the budget is spent or the space exhausted."""

    def tell(self, candidate: Hashable, score: float | None) -> None:
        """The score of the candidate last asked (None or NaN: failed or undefined)."""


class ListStrategy:
    """Candidates from a fixed list, in order (random with/without replacement, exhaustive)."""

    def __init__(self, candidates: list):
        self._candidates = list(candidates)
        self._next = 0

    def ask(self):
        if self._next >= len(self._candidates):
            return None
        self._next += 1
        return self._candidates[self._next - 1]

    def tell(self, candidate, score) -> None:
        pass


class RegularizedEvolution:
    """Aging evolution (Real et al., 2019) with the score as fitness.

    The first ``population`` candidates are random; then each new one is a mutation of the best
    of ``sample_size`` members drawn from the population, and the oldest member dies. Failed or
    NaN scores have the lowest fitness.
    """

    def __init__(self, space, budget: int, seed: int, population: int = 20, sample_size: int = 5):
        if not hasattr(space, "mutate"):
            raise ValueError(f"evolution needs a space with mutate(candidate, rng); {type(space).__name__} has none")
        if not 1 <= sample_size <= population:
            raise ValueError(f"need 1 <= sample_size <= population, got {sample_size} and {population}")
        self.space, self.budget = space, budget
        self.population_size, self.sample_size = population, sample_size
        self.rng = random.Random(seed)
        self.population: collections.deque = collections.deque()
        self._initial = space.sample(min(population, budget), seed=seed)
        self._asked = 0

    def ask(self):
        if self._asked >= self.budget:
            return None
        self._asked += 1
        if self._asked <= len(self._initial):
            return self._initial[self._asked - 1]
        contenders = self.rng.sample(list(self.population), min(self.sample_size, len(self.population)))
        parent = max(contenders, key=lambda member: member[1])[0]
        return self.space.mutate(parent, self.rng)

    def tell(self, candidate, score) -> None:
        fitness = -math.inf if score is None or math.isnan(score) else score
        self.population.append((candidate, fitness))
        if len(self.population) > self.population_size:
            self.population.popleft()


def make_strategy(name: str, space, budget: int | None, seed: int, population: int = 20,
                  sample_size: int = 5) -> Strategy:
    """The strategy called ``name`` over ``space`` with ``budget`` candidates."""
    if name == "exhaustive":
        candidates = list(space)
        return ListStrategy(candidates if budget is None else candidates[:budget])
    if budget is None or budget < 1:
        raise ValueError(f"strategy {name!r} needs a budget >= 1, got {budget!r}")
    if name == "random":
        return ListStrategy(space.sample(budget, seed=seed, replace=True))
    if name == "random_without_replacement":
        return ListStrategy(space.sample(budget, seed=seed, replace=False))
    if name == "evolution":
        return RegularizedEvolution(space, budget, seed, population, sample_size)
    raise ValueError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}")
