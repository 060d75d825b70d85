"""Scores by name: ``get_score("epe")`` -> the scoring function, as timm's model registry.

Each entry also carries a :class:`ScoreInfo` (``score_info(name)``) saying whether the score needs
labels and whether it depends on the data, so that callers (search, callback, benchmarks) can
skip the labels or score one fixed batch for every candidate without special-casing names.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

from ..deprecation import deprecated

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


def unregister_score(name: str) -> None:
    """Remove a registered score (for a notebook or test that defines the same score again)."""
    if name not in _SCORES:
        raise _unknown(name)
    del _SCORES[name], _INFO[name]


def list_scores(filter: str | Sequence[str] = "", exclude_filters: str | Sequence[str] = "") -> list[str]:
    """The registered score names, sorted; as ``timm.list_models``, ``filter`` keeps the names matching a
    wildcard pattern (``"az_*"``; or any of a list) and ``exclude_filters`` drops those matching one."""
    keep = [filter] if isinstance(filter, str) else list(filter)
    drop = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
    return sorted(name for name in _SCORES
                  if (not any(keep) or any(fnmatch.fnmatchcase(name, p) for p in keep if p))
                  and not any(fnmatch.fnmatchcase(name, p) for p in drop if p))


def available() -> list[str]:
    """Deprecated alias of :func:`list_scores` (removed in 0.3)."""
    deprecated("lightning_epe.scores.available() is now list_scores()")
    return list_scores()


def _unknown(name) -> ValueError:
    close = difflib.get_close_matches(str(name), list(_SCORES), n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(f"unknown score {name!r}; available scores: {', '.join(list_scores())}, or the dotted "
                      f"path of a function registered with @register_score (e.g. 'my_package.proxies.my_score')."
                      f"{hint}")


def _import_dotted(name: str) -> ScoreInfo | None:
    """The score registered by the function at dotted path ``name`` (importing its module registers it)."""
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        return None
    try:
        fn = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        return None
    for info in _INFO.values():
        if info.fn is fn:
            return info
    raise ValueError(f"{name!r} is not a registered score: decorate it with @register_score('its_name', ...)")


def score_info(name: str) -> ScoreInfo:
    """The :class:`ScoreInfo` of ``name``: a registered name, or the dotted path of a registered function
    (its module is imported, which registers it), as YAML names a user's own score."""
    if isinstance(name, str):
        info = _INFO.get(name) or ("." in name and _import_dotted(name)) or None
        if info is not None:
            return info
    raise _unknown(name)


def get_score(name: str) -> Callable[..., float]:
    """The scoring function registered as ``name`` (or at that dotted path); unknown names raise with the known ones."""
    return score_info(name).fn
