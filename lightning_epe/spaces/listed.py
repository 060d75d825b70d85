"""A space from a plain list or dict of candidates: factories, timm model names, or name -> factory.

``ListSpace([make_small, make_wide, "resnet18"])`` or ``ListSpace({"small": make_small, "r18": "resnet18"})``;
``ArchitectureSearch(space=[...])`` and ``lightning_epe.rank([...], data)`` make one. A candidate is the
entry's name (a dict's key, a function's or class's ``__name__``, the timm name), which is the record's id.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Callable, Mapping, Sequence

from torch import nn

from .base import CandidateSpace, sample_indices
from .timm import TimmSpace, create

Factory = Callable[..., nn.Module]


class ListSpace(CandidateSpace):
    """A fixed set of named candidates, each a factory (a callable returning an ``nn.Module``) or a timm model name.

    Args:
        models: a list of factories and/or timm names (``"resnet18"``, or with ``create_model`` arguments
            ``'resnet18 {"drop_path_rate": 0.1}'``), or a dict ``{name: factory or timm name}``. In YAML a
            factory is its dotted path (``my_package.nets.small_cnn``); a string that timm does not know and
            that is a dotted path is imported.

    A factory is called anew for every network, under the candidate's seed; it gets ``num_classes`` when
    its signature names it (or takes ``**kwargs``), ``in_channels`` when it names it, and the search's
    ``build_options`` as keyword arguments. Names must be unique: a list of lambdas, or two entries of one
    function, needs a dict to name them.
    """

    name = "list"

    def __init__(self, models: Sequence[Factory | str] | Mapping[str, Factory | str]):
        if isinstance(models, ListSpace):
            models = dict(models.entries)
        if isinstance(models, (str, bytes)) or callable(models) and not isinstance(models, Mapping):
            models = [models]
        if isinstance(models, Mapping):
            pairs = [(self._check_name(name), entry) for name, entry in models.items()]
        elif isinstance(models, (list, tuple)):
            pairs = [(self._name_of(entry, i), entry) for i, entry in enumerate(models)]
        else:
            raise TypeError(f"ListSpace takes a list of candidates or a dict name -> candidate, got "
                            f"{type(models).__name__}")
        if not pairs:
            raise ValueError("ListSpace needs at least one candidate (a factory returning an nn.Module, or a timm "
                             "model name)")
        self.entries: dict[str, Factory | str] = {}
        for name, entry in pairs:
            if name in self.entries:
                raise ValueError(f"two candidates are named {name!r}: give them names with a dict, e.g. "
                                 f"{{'{name}_a': ..., '{name}_b': ...}}")
            self.entries[name] = self._check_entry(name, entry)

    # ------------------------------------------------------------------------------------ entries
    @staticmethod
    def _check_name(name) -> str:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a candidate's name must be a non-empty string, got {name!r}")
        return name

    @staticmethod
    def _name_of(entry, position: int) -> str:
        if isinstance(entry, str):
            return entry.strip()
        name = getattr(entry, "__name__", None) or getattr(getattr(entry, "func", None), "__name__", None)
        if isinstance(entry, nn.Module) or not callable(entry):
            raise TypeError(ListSpace._not_a_candidate(entry, position))
        return name or f"{type(entry).__name__}_{position}"

    @staticmethod
    def _not_a_candidate(entry, where) -> str:
        if isinstance(entry, nn.Module):
            return (f"candidate {where}: a {type(entry).__name__} instance is a network, not a factory; an nn.Module "
                    "instance cannot be re-initialised for each candidate's seed: pass its class or a function that "
                    "builds it (e.g. {'mine': lambda: MyNet()})")
        return (f"candidate {where}: {entry!r} ({type(entry).__name__}) is neither a factory (a callable returning an "
                "nn.Module) nor a timm model name")

    def _check_entry(self, name: str, entry) -> Factory | str:
        if isinstance(entry, str):
            text = entry.strip()
            model = TimmSpace.split(text)[0]
            if "." in model and not _timm_knows(model):
                return _import_factory(text, name)
            TimmSpace.create_args(text)  # an unknown name raises with the closest timm names
            return text
        if isinstance(entry, nn.Module) or not callable(entry):
            raise TypeError(self._not_a_candidate(entry, repr(name)))
        return entry

    # ------------------------------------------------------------------------------------ space
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def __repr__(self) -> str:
        return f"ListSpace({', '.join(self.entries)})"

    def sample(self, n: int, seed: int | None = None, replace: bool = True) -> list[str]:
        names = list(self.entries)
        return [names[i] for i in sample_indices(len(names), n, seed, replace)]

    def parse(self, text) -> str:
        if text not in self.entries:
            raise ValueError(f"unknown candidate {text!r}; this list has: {', '.join(self.entries)}")
        return text

    def describe(self, candidate: str) -> str:
        entry = self.entries.get(candidate)
        return entry if isinstance(entry, str) and entry != candidate else str(candidate)

    def mutate(self, candidate: str, rng) -> str:
        """Another candidate of the list (a list has no structure to mutate)."""
        others = [c for c in self.entries if c != candidate]
        return rng.choice(others) if others else candidate

    def build(self, candidate: str, num_classes: int = 10, in_channels: int = 3, **options) -> nn.Module:
        entry = self.entries[self.parse(candidate)]
        if isinstance(entry, str):
            return create(entry, num_classes=num_classes, in_channels=in_channels, **options)
        kwargs = dict(options)
        parameters = _parameters(entry)  # None (no signature to read): called with build_options only
        if parameters is not None and ("num_classes" in parameters or _takes_kwargs(parameters)):
            kwargs.setdefault("num_classes", num_classes)
        if parameters is not None and "in_channels" in parameters:
            kwargs.setdefault("in_channels", in_channels)
        network = entry(**kwargs)
        if not isinstance(network, nn.Module):
            raise TypeError(f"candidate {candidate!r}: its factory returned {type(network).__name__}, not an nn.Module")
        return network

    def config(self, candidate: str | None = None) -> dict | None:
        """A list of ``candidate`` alone (or of all), each entry a timm name or a factory's dotted path; None when
        a factory has none (a lambda, a local function): reloading a checkpoint then needs the space."""
        names = [self.parse(candidate)] if candidate is not None else list(self.entries)
        models = {name: _locator(self.entries[name]) for name in names}
        if any(value is None for value in models.values()):
            return None
        return {"class_path": "lightning_epe.spaces.ListSpace", "init_args": {"models": models}}

    def create_args(self, candidate: str) -> dict | None:
        """For a timm candidate, its ``timm.create_model`` arguments ``{"model_name": ..., **kwargs}``; else None."""
        entry = self.entries[self.parse(candidate)]
        if not isinstance(entry, str):
            return None
        return TimmSpace.create_args(entry)


def _locator(entry) -> str | None:
    """A timm name as is; a factory's dotted path when importing it gives it back; else None."""
    if isinstance(entry, str):
        return entry
    module, qualname = getattr(entry, "__module__", None), getattr(entry, "__qualname__", "")
    if not module or "<" in qualname:
        return None
    try:
        found = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}.{qualname}" if found is entry and "." not in qualname else None


def _parameters(factory) -> dict | None:
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return None


def _takes_kwargs(parameters: dict) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _timm_knows(name: str) -> bool:
    import timm

    return timm.is_model(name)


def _import_factory(path: str, name: str) -> Factory:
    """The callable at dotted path ``path`` (YAML names a factory so)."""
    module_name, _, attribute = path.rpartition(".")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"candidate {name!r}: {path!r} is neither a timm model name nor an importable dotted path "
                         f"of a factory ({type(err).__name__}: {err})") from None
    if not callable(factory):
        raise TypeError(f"candidate {name!r}: {path!r} is a {type(factory).__name__}, not a factory")
    return factory
