"""Scores by name: ``get_score("epe")`` -> the scoring function, as timm's model registry.

Each entry also carries a :class:`ScoreInfo` (``score_info(name)``) saying whether the score needs
labels and whether it depends on the data, so that callers (search, callback, benchmarks) can
skip the labels or score one fixed batch for every candidate without special-casing names.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

_SCORES: dict[str, Callable[..., float]] = {}
_INFO: dict[str, "ScoreInfo"] = {}


@dataclass(frozen=True)
class ScoreInfo:
    """What a registered score needs.

    Attributes:
        name: the registry name.
        fn: the scoring function ``(model, inputs, targets, **options) -> float``.
        needs_labels: ``targets`` must be integer labels; when False, ``targets`` may be None and
            is ignored.
        data_dependent: the value depends on the input values (and labels, if any). When False
            it depends only on the network and the input *shape* (e.g. ``params``, ``flops``,
            ``synflow``).
        combine: for relative scores (rank ensembles): turns a table of ``fn``'s results for several
            candidates into one value per candidate.
    """

    name: str
    fn: Callable[..., float]
    needs_labels: bool = True
    data_dependent: bool = True
    combine: Callable | None = None

    @property
    def relative(self) -> bool:
        """True for rank ensembles: ``fn`` returns member scores, ``combine(table)`` ranks candidates."""
        return self.combine is not None

    @property
    def summary(self) -> str:
        """The first line of the function's docstring."""
        return (self.fn.__doc__ or "").strip().split("\n", 1)[0]


def register_score(name: str, *, needs_labels: bool = True, data_dependent: bool = True,
                   combine: Callable | None = None):
    """Decorator registering a scoring function ``(model, inputs, targets, **options) -> float``.

    ``needs_labels`` and ``data_dependent`` are recorded in the score's :class:`ScoreInfo`; the
    defaults (True, True) describe a label-based score such as EPE-NAS.
    """

    def wrap(fn):
        if name in _SCORES:
            raise ValueError(f"a score named {name!r} is already registered")
        _SCORES[name] = fn
        _INFO[name] = ScoreInfo(name, fn, needs_labels=bool(needs_labels), data_dependent=bool(data_dependent),
                                combine=combine)
        return fn

    return wrap


def available() -> list[str]:
    """The registered score names, sorted."""
    return sorted(_SCORES)


def _unknown(name) -> ValueError:
    close = difflib.get_close_matches(str(name), list(_SCORES), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(f"unknown score {name!r}; available scores: {', '.join(available())}.{hint}")


def get_score(name: str) -> Callable[..., float]:
    """The scoring function registered as ``name``; unknown names raise with the known ones."""
    try:
        return _SCORES[name]
    except (KeyError, TypeError):
        raise _unknown(name) from None


def score_info(name: str) -> ScoreInfo:
    """The :class:`ScoreInfo` of the score registered as ``name`` (needs labels? data-dependent?)."""
    try:
        return _INFO[name]
    except (KeyError, TypeError):
        raise _unknown(name) from None
