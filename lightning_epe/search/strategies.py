"""Search strategies: ask for the next candidate, tell its score.

A strategy is any object with ``setup(space, budget, seed)``, ``ask()`` and ``tell(candidate,
score)`` (the :class:`Strategy` protocol). The built-in ones register a name where they are
defined (``@register_strategy``), so ``ArchitectureSearch(search_strategy="evolution")`` and YAML
``search_strategy: evolution`` find them; a user's own strategy is passed as an instance, or in YAML
as ``class_path``/``init_args``. Its own hyper-parameters are its ``__init__`` arguments.

Strategies are deterministic given their seed and the scores told to them, which is what makes a
search resumable: the runner replays stored scores and the strategy asks the same candidates again.
"""
from __future__ import annotations

import collections
import difflib
import math
import random
from typing import Callable, Hashable, Protocol, runtime_checkable

from ._checks import check_int


@runtime_checkable
class Strategy(Protocol):
    """What a search strategy implements. ``setup`` (re)starts it: a resumed search calls it again.

    The methods are not annotated on purpose: jsonargparse (YAML ``class_path``) accepts any
    annotation of an implementation only where the protocol has none.
    """

    def setup(self, space, budget, seed):
        """Start over ``space`` with ``budget`` candidates (an int, or None: the whole space, where that
        is finite), seeded by the int ``seed``."""

    def ask(self):
        """The next candidate (hashable, JSON-friendly), or None when the budget is spent or the space exhausted."""

    def tell(self, candidate, score):
        """The score (a float, or None/NaN: failed or undefined) of ``candidate``, asked before."""


_STRATEGIES: dict[str, Callable[[], Strategy]] = {}


def register_strategy(name: str, **defaults):
    """Class decorator: ``name`` makes an instance of the class with ``defaults`` as its arguments.

    Stack it to register one class under several names with different arguments.
    """

    def wrap(cls):
        if name in _STRATEGIES:
            raise ValueError(f"a search strategy named {name!r} is already registered")
        _STRATEGIES[name] = lambda: cls(**defaults)
        return cls

    return wrap


def list_strategies() -> list[str]:
    """The registered strategy names, in the order they were registered."""
    return list(_STRATEGIES)


def get_strategy(name: str) -> Strategy:
    """A new instance of the strategy registered as ``name``; unknown names raise with the known ones."""
    try:
        return _STRATEGIES[name]()
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_STRATEGIES), n=2)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown search strategy {name!r}; available: {', '.join(list_strategies())}, or a "
                         f"Strategy instance (YAML: class_path/init_args).{hint}") from None


def strategy_of(value: str | Strategy) -> Strategy:
    """A strategy from a registered name or an instance of the protocol."""
    if isinstance(value, str):
        return get_strategy(value)
    if isinstance(value, Strategy):
        return value
    raise TypeError(f"search_strategy must be a registered name ({', '.join(list_strategies())}) or an object "
                    f"with setup(space, budget, seed), ask() and tell(candidate, score); got {value!r:.80}: "
                    f"{protocol_problem(type(value))}")


PROTOCOL = {"setup": ("space", "budget", "seed"), "ask": (), "tell": ("candidate", "score")}


def protocol_problem(cls: type) -> str:
    """What keeps ``cls`` from being a :class:`Strategy`, in words: which method is missing or takes other
    arguments."""
    import inspect

    name = f"{cls.__module__}.{cls.__qualname__}"
    wanted = "the Strategy protocol: setup(space, budget, seed), ask() and tell(candidate, score)"
    for method, parameters in PROTOCOL.items():
        function = getattr(cls, method, None)
        if not callable(function):
            return f"{name} has no method {method}({', '.join(parameters)}) ({wanted})"
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):  # (a builtin without a signature: assume it fits)
            continue
        try:
            signature.bind(None, *parameters)  # (self, ...)
        except TypeError:
            return f"{name}.{method}{signature} does not take {method}({', '.join(parameters)}) ({wanted})"
    return f"{name} does not match {wanted}"


def describe_strategy(value: str | Strategy) -> tuple[str, dict]:
    """``(name, options)`` for the results' configuration: the strategy's ``name`` (built-in ones have
    their registered name; otherwise the class path) and its ``hparams`` (what else determines its
    candidates; a strategy of your own may define both)."""
    strategy = strategy_of(value)
    name = getattr(strategy, "name", None) or f"{type(strategy).__module__}.{type(strategy).__qualname__}"
    return name, dict(getattr(strategy, "hparams", {}))


def _need_budget(name: str, budget: int | None) -> int:
    return check_int("budget", budget, 1, flag=f"--search.budget; search strategy {name!r}")


class _ListStrategy:
    """Candidates from a list fixed at ``setup``, in order; scores do not matter."""

    name = ""
    hparams: dict = {}

    def __init__(self):
        self._candidates: list = []
        self._next = 0

    def _propose(self, space, budget: int | None, seed: int) -> list:
        raise NotImplementedError

    def setup(self, space, budget: int | None, seed: int) -> None:
        self._candidates, self._next = list(self._propose(space, budget, seed)), 0

    def ask(self) -> Hashable | None:
        if self._next >= len(self._candidates):
            return None
        self._next += 1
        return self._candidates[self._next - 1]

    def tell(self, candidate: Hashable, score: float | None) -> None:
        pass


@register_strategy("random_without_replacement", replace=False)
@register_strategy("random", replace=True)  # the lower decorator registers first
class RandomSearch(_ListStrategy):
    """``budget`` candidates drawn uniformly at random (with replacement: the EPE-NAS paper's search)."""

    def __init__(self, replace: bool = True):
        super().__init__()
        self.replace = replace
        self.name = "random" if replace else "random_without_replacement"

    def _propose(self, space, budget, seed):
        return space.sample(_need_budget("random", budget), seed=seed, replace=self.replace)


@register_strategy("exhaustive")
class ExhaustiveSearch(_ListStrategy):
    """Every candidate of the space in its own order (the first ``budget`` ones, if given)."""

    name = "exhaustive"

    def _propose(self, space, budget, seed):
        budget = check_int("budget", budget, 1, none="None: the whole space",
                           flag="--search.budget; search strategy 'exhaustive'")
        candidates = list(space)
        return candidates if budget is None else candidates[:budget]


@register_strategy("evolution")
class RegularizedEvolution:
    """Aging evolution (Real et al., 2019) with the score as fitness.

    The first ``population`` candidates are random; then each new one is a mutation of the best
    of ``sample_size`` members drawn from the population, and the oldest member dies. Failed or
    NaN scores have the lowest fitness. The space needs ``mutate(candidate, rng)``.

    Args:
        population: the population size.
        sample_size: the tournament size (1 <= sample_size <= population).
    """

    name = "evolution"

    def __init__(self, population: int = 20, sample_size: int = 5):
        flag = "search_strategy.init_args.{}"
        population = check_int("population", population, 1, flag=flag.format("population"))
        sample_size = check_int("sample_size", sample_size, 1, population, flag=flag.format("sample_size"))
        self.population_size, self.sample_size = population, sample_size
        self.hparams = {"population": population, "sample_size": sample_size}

    def setup(self, space, budget: int | None, seed: int) -> None:
        if not hasattr(space, "mutate"):
            raise ValueError(f"evolution needs a space with mutate(candidate, rng); {type(space).__name__} has none")
        self.space, self.budget = space, _need_budget("evolution", budget)
        self.rng = random.Random(seed)
        self.population: collections.deque = collections.deque()
        self._initial = space.sample(min(self.population_size, self.budget), seed=seed)
        self._asked = 0

    def ask(self) -> Hashable | None:
        if self._asked >= self.budget:
            return None
        self._asked += 1
        if self._asked <= len(self._initial):
            return self._initial[self._asked - 1]
        contenders = self.rng.sample(list(self.population), min(self.sample_size, len(self.population)))
        parent = max(contenders, key=lambda member: member[1])[0]
        return self.space.mutate(parent, self.rng)

    def tell(self, candidate: Hashable, score: float | None) -> None:
        fitness = -math.inf if score is None or math.isnan(score) else score
        self.population.append((candidate, fitness))
        if len(self.population) > self.population_size:
            self.population.popleft()


def make_strategy(name: str | Strategy, space, budget: int | None, seed: int) -> Strategy:
    """The strategy ``name`` (or instance), set up over ``space`` with ``budget`` candidates."""
    strategy = strategy_of(name)
    strategy.setup(space, budget, seed)
    return strategy
