"""Candidates from timm: model names (wildcards allowed) times a grid of ``create_model`` arguments."""
from __future__ import annotations

import difflib
import fnmatch
import itertools
import json

from torch import nn

from .base import CandidateSpace, sample_indices

_SEPARATOR = " "  # "resnet18" or 'resnet18 {"drop_rate": 0.1}'


def _timm():
    import timm

    return timm


class TimmSpace(CandidateSpace):
    """timm models as candidates, always untrained (``pretrained=False``).

    A candidate is a string: the model name, followed by the JSON of its grid arguments when a grid
    is given (``'resnet18 {"drop_rate": 0.1}'``). ``num_classes`` and ``in_channels`` come from the
    data. Dropout and drop-path are switched off while scoring (by the scores themselves) and are
    active again for training.

    Args:
        models: timm model names or wildcard patterns (``"resnet*"``, ``"mobilenetv3_*"``), as
            ``timm.list_models`` understands them.
        grid: optional ``create_model`` keyword arguments, each with a list of values; every model
            is combined with every point of the grid.
        exclude: wildcard patterns of names to leave out.
        candidates: instead of the three above, the candidates themselves (``'resnet18 {"drop_rate": 0.1}'``).
    """

    name = "timm"

    def __init__(self, models: list[str] | None = None, grid: dict[str, list] | None = None,
                 exclude: list[str] | None = None, candidates: list[str] | None = None):
        if candidates is not None:  # the candidates themselves, as config() gives them (no expansion)
            if models is not None or grid or exclude:
                raise ValueError("TimmSpace takes models (with grid, exclude) or candidates, not both")
            self.candidates = [self.parse(c) for c in candidates]
            return
        if models is None:
            raise ValueError("TimmSpace needs models: timm model names or patterns")
        if isinstance(models, str):
            models = [models]
        if not models:
            raise ValueError("TimmSpace needs at least one model name or pattern")
        names: list[str] = []
        for pattern in models:
            found = self._expand(pattern)
            names.extend(n for n in found if n not in names)
        names = [n for n in names if not any(fnmatch.fnmatch(n, e) for e in exclude or [])]
        if not names:
            raise ValueError(f"no timm model left after excluding {exclude}")
        grid = dict(grid or {})
        for key, values in grid.items():
            if not isinstance(values, (list, tuple)) or not values:
                raise ValueError(f"grid[{key!r}] must be a non-empty list of values, got {values!r}")
        points = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())] if grid else [{}]
        self.candidates = [self._format(n, p) for n in names for p in points]

    @staticmethod
    def _expand(pattern: str) -> list[str]:
        timm = _timm()
        if any(ch in pattern for ch in "*?["):
            found = timm.list_models(pattern)
            if not found:
                raise ValueError(f"no timm model matches {pattern!r}; see timm.list_models()")
            return found
        if not timm.is_model(pattern):
            close = difflib.get_close_matches(pattern, timm.list_models(), n=5, cutoff=0.6)
            hint = f" Closest known names: {', '.join(close)}." if close else ""
            raise ValueError(f"unknown timm model {pattern!r}.{hint}")
        return [pattern]

    @staticmethod
    def _format(name: str, kwargs: dict) -> str:
        return name if not kwargs else f"{name}{_SEPARATOR}{json.dumps(kwargs, sort_keys=True)}"

    @staticmethod
    def split(candidate: str) -> tuple[str, dict]:
        """``'resnet18 {"drop_rate": 0.1}'`` -> ``("resnet18", {"drop_rate": 0.1})``."""
        name, _, kwargs = str(candidate).partition(_SEPARATOR)
        return name, json.loads(kwargs) if kwargs else {}

    def __len__(self) -> int:
        return len(self.candidates)

    def __iter__(self):
        return iter(self.candidates)

    def __repr__(self) -> str:
        return f"TimmSpace({len(self)} candidates)"

    def sample(self, n: int, seed: int | None = None, replace: bool = True) -> list[str]:
        return [self.candidates[i] for i in sample_indices(len(self), n, seed, replace)]

    def parse(self, text) -> str:
        name, kwargs = self.split(text)
        self._expand(name)  # validates the name with close matches
        return self._format(name, kwargs)

    def config(self, candidate: str | None = None) -> dict:
        """A space of ``candidate`` alone (its name and grid point), or of all the candidates."""
        models = [candidate] if candidate is not None else list(self.candidates)
        return {"class_path": "lightning_epe.spaces.TimmSpace", "init_args": {"candidates": models}}

    @classmethod
    def create_args(cls, candidate: str) -> dict:
        """The ``timm.create_model`` arguments of a candidate: ``'resnet18 {"drop_path_rate": 0.1}'`` ->
        ``{"model_name": "resnet18", "drop_path_rate": 0.1}``; build the winner with
        ``timm.create_model(**args, num_classes=...)`` (untrained; ``in_chans`` for other than 3 channels)."""
        name, kwargs = cls.split(candidate)
        cls._expand(name)
        return {"model_name": name, **kwargs}

    def mutate(self, candidate: str, rng) -> str:
        """Another candidate of the space (timm models have no shared structure to mutate)."""
        others = [c for c in self.candidates if c != candidate]
        return rng.choice(others) if others else candidate

    def build(self, candidate: str, num_classes: int = 10, in_channels: int = 3, **options) -> nn.Module:
        return create(candidate, num_classes=num_classes, in_channels=in_channels, **options)


def create(candidate: str, num_classes: int = 10, in_channels: int = 3, **options) -> nn.Module:
    """The untrained network of a timm candidate (``"resnet18"`` or ``'resnet18 {"drop_rate": 0.1}'``)."""
    args = TimmSpace.create_args(candidate)
    return _timm().create_model(**args, pretrained=False, num_classes=num_classes, in_chans=in_channels, **options)
