"""Rank ensembles: several proxies combined by aggregating their ranks across candidates.

A proxy's raw values are on unrelated scales (EPE ~1e3, synflow ~1e50, params ~1e6), but their
*ranks* over the candidates being compared are comparable. As AZ-NAS (Lee & Ham, 2024) does, the
ensemble value of candidate i is ``sum_m log(rank_m(i) / n)`` with ranks 1 (worst) .. n (best),
ties averaged, NaN ranked worst (``ranking.py``); members may be weighted, and a second stage may re-order
the top of the first (the default ensemble, :data:`~.ranking.DEFAULT_RERANK`). It is therefore relative: it
only means something among the candidates it was computed over, and it changes when candidates are added.
"""
from __future__ import annotations

import inspect
from typing import Mapping, Sequence

import torch
from torch import nn

from .fused import score_many
from .ranking import (  # noqa: F401 (re-exported)
    DEFAULT_MEMBERS,
    DEFAULT_RERANK,
    DEFAULT_WEIGHTS,
    TAU_MEMBERS,
    TOP_WEIGHTS,
    average_ranks,
    check_members,
    ensemble_rule,
    ensemble_values,
    rank_aggregate,
    rank_ensemble,
)
from .registry import get_score, register_score

#: How each proxy's official code feeds it, used for ensemble members unless ``member_options`` say
#: otherwise (``samples``: the first rows of the batch; ``noise``: Gaussian noise of that shape, drawn
#: after the official re-initialisation). ``bench/nb201_sota.py`` scores the benchmark this way.
OFFICIAL_PROTOCOLS: dict[str, dict] = {
    "meco": {"samples": 1},
    "meco_official": {"samples": 1},
    "swap": {"samples": 16},
    **{name: {"samples": 64, "noise": True} for name in ("az_expressivity", "az_progressivity", "az_trainability",
                                                         "vkdnw", "vkdnw_entropy")},
}


def member_protocol(name: str, batch: int) -> dict:
    """The official protocol of ``name``; a batch smaller than its ``samples`` is used whole."""
    protocol = dict(OFFICIAL_PROTOCOLS.get(name, {}))
    if "samples" in protocol:
        protocol["samples"] = min(protocol["samples"], batch)
    return protocol


@register_score("ensemble", needs_labels=True, data_dependent=True, combine=rank_ensemble)
def ensemble_scores(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                    members: Sequence[str] | None = None, member_options: Mapping[str, Mapping] | None = None,
                    weights: Mapping[str, float] | None = None, rerank: Mapping | None = None,
                    **options) -> dict[str, float]:
    """The member scores of one network (a dict ``{member: value}``); combine several with ``rank_ensemble``.

    ``options`` are passed to the members that accept them (e.g. ``class_count`` to ``epe``). Each
    member is fed as its official code feeds it (:data:`OFFICIAL_PROTOCOLS`: MeCo one image, SWAP 16,
    AZ-NAS and VKDNW 64 samples of noise), updated by ``member_options[member]`` (e.g.
    ``{"meco": {"samples": 64}}``); a network that cannot take a member's first rows (MeCo's single image
    through a train-mode BatchNorm on 1x1 features, as timm models at 32x32) gets the whole batch for
    that member. Members that read the same pass of the network share it (``score_many``). ``members=None``:
    :data:`DEFAULT_MEMBERS`. ``weights`` and ``rerank`` (:func:`~.ranking.ensemble_values`) are checked here and
    used when the candidates are ranked (:func:`rank_ensemble`); they do not change a network's member scores.
    """
    members, _, _ = ensemble_rule(members, weights, rerank)
    accepted = {name: inspect.signature(get_score(name)).parameters for name in members}
    unknown = set(member_options or {}) - set(members)
    if unknown:
        raise ValueError(f"member_options name score(s) that are not members: {sorted(unknown)}")
    per_member = {name: {**{k: v for k, v in options.items() if k in accepted[name]},
                         **member_protocol(name, len(inputs)), **(member_options or {}).get(name, {})}
                  for name in members}
    options_of = {n: o for n, o in per_member.items() if o}
    sliced = [n for n in members if "samples" in per_member[n]]  # fed the first rows of the batch
    whole = [n for n in members if n not in sliced]
    values = score_many(model, inputs, targets, whole, {n: options_of[n] for n in whole if n in options_of})
    try:
        values.update(score_many(model, inputs, targets, sliced, {n: options_of[n] for n in sliced}))
    except ValueError:  # one of them cannot take its first rows: each alone, the failing one on the whole batch
        values.update({name: _sliced_member(model, inputs, targets, name, per_member[name]) for name in sliced})
    return {name: values[name] for name in members}


def _sliced_member(model, inputs, targets, name: str, options: dict) -> float:
    """A member fed the protocol's first rows; a network that cannot take them (MeCo's single image through
    a train-mode BatchNorm on 1x1 features, common in timm models at 32x32) gets the whole batch instead.
    A member that fails on the whole batch too raises."""
    try:
        return score_many(model, inputs, targets, (name,), {name: options})[name]
    except ValueError:
        pass
    whole = {k: v for k, v in options.items() if k != "samples"}
    return score_many(model, inputs, targets, (name,), {name: whole} if whole else None)[name]
