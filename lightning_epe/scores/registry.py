"""Scores by name: ``get_score("epe")`` -> the scoring function, as timm's model registry."""
from __future__ import annotations

import difflib
from typing import Callable

_SCORES: dict[str, Callable[..., float]] = {}


def register_score(name: str):
    """Decorator registering a scoring function ``(model, inputs, targets, **options) -> float``."""

    def wrap(fn):
        if name in _SCORES:
            raise ValueError(f"a score named {name!r} is already registered")
        _SCORES[name] = fn
        return fn

    return wrap


def available() -> list[str]:
    """The registered score names, sorted."""
    return sorted(_SCORES)


def get_score(name: str) -> Callable[..., float]:
    """The scoring function registered as ``name``; unknown names raise with the known ones."""
    try:
        return _SCORES[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_SCORES), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown score {name!r}; available scores: {', '.join(available())}.{hint}") from None
