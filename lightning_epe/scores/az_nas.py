"""AZ-NAS (Lee & Ham, CVPR 2024): expressivity, progressivity and trainability of cell features.

The official NB201 scorer (cvlab-yonsei/AZ-NAS@5e6683a, ``NB201/ZeroShotProxy/compute_az_nas_score.py``)
runs the network once in train mode and keeps the *cell features* ``f_0 .. f_L`` (NB201: the stem
output and the output of each of the 17 cells, ``NB201/custom/tss_model.py::extract_cell_features``):

- **expressivity**: for each feature, the (C x C) covariance of its channel vectors over
  batch x positions; ``p`` = its eigenvalues over their sum; entropy ``sum -p log(p + 1e-8)``.
  Expressivity is the sum of the entropies, **progressivity** the smallest increase of the entropy
  from one feature to the next.
- **trainability**: for each pair ``(f_{i-1}, f_i)``, ``i = L .. 1``, random signs ``g_out`` (the
  global RNG's Bernoulli(0.5) draws, last cell first) are back-propagated through the cell,
  ``g_in = d<f_i, g_out>/d f_{i-1}``; with ``M = g_in^T g_out / rows`` (after ``PixelUnshuffle``
  when the cell reduces the resolution) and ``s`` its largest singular value, the cell scores
  ``-s - 1/(s + 1e-6) + 2`` (at most 0, at ``s = 1``). A cell whose ``g_in`` equals ``g_out`` exactly (an
  identity cell) scores ``-inf``. Trainability is the mean over the cells.

The AZ-NAS score itself (``az_nas``) ranks candidates: ``sum_k log(rank_k / N)`` over expressivity,
progressivity, trainability and FLOPs (``tss_general.ipynb``), with :func:`~.ranking.rank_ensemble`.
"""
from __future__ import annotations

import math
from typing import Callable, Literal, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._hooks import is_activation
from ._isolation import scoring_context
from ._reinit import kaiming_fanin_tensors
from ._validation import check_batch, model_device, prepare_inputs
from .ranking import rank_ensemble
from .registry import register_score, score_info

Mode = Literal["official", "clean"]
Init = Literal["official"] | None

COMPONENTS: tuple[str, ...] = ("expressivity", "progressivity", "trainability")
#: the members of the ``az_nas`` rank aggregate (the registered component scores and FLOPs)
AZ_NAS_MEMBERS: tuple[str, ...] = ("az_expressivity", "az_progressivity", "az_trainability", "flops")
_INITS = ("official", None)
_MODES = ("official", "clean")

FeatureSpec = Sequence[str] | None


# ------------------------------------------------------------------ the official re-initialisation


# ------------------------------------------------------------------ which features


def _is_nb201(model: nn.Module) -> bool:
    return isinstance(getattr(model, "cells", None), nn.ModuleList) and isinstance(getattr(model, "stem", None),
                                                                                   nn.Module)


def _blocks_in(module: nn.Module, prefix: str, inside_block: bool) -> list[tuple[str, nn.Module]]:
    """The finest block list under ``module`` (see :func:`feature_modules`)."""
    found: list[tuple[str, nn.Module]] = []
    is_list = isinstance(module, nn.Sequential) or (isinstance(module, nn.ModuleList) and not inside_block)
    for name, child in module.named_children():
        qualified = prefix + name
        if is_list and next(child.children(), None) is not None:
            inner = _blocks_in(child, qualified + ".", True)
            found += inner or [(qualified, child)]
        else:
            found += _blocks_in(child, qualified + ".", inside_block)
    return found


def feature_modules(model: nn.Module, features: FeatureSpec = None) -> tuple[str, list[tuple[str, nn.Module]]]:
    """How the features of ``model`` are taken: ``(kind, [(name, module), ...])``.

    kind is ``"extract_cell_features"`` (the model's own method, as AZ-NAS's models), ``"nb201"``
    (``stem`` + ``cells``), ``"named"`` (``features=``), ``"blocks"`` (the generic block rule:
    the input of the first block, then each block's output) or ``"activations"`` (each activation
    module's output). Raises ``ValueError`` when nothing fits.
    """
    named = dict(model.named_modules())
    if features is not None:
        if isinstance(features, str) or not all(isinstance(n, str) for n in features):
            raise TypeError(f"features must be a sequence of module names (e.g. ['layer1', 'layer2']), "
                            f"got {features!r}")
        missing = [n for n in features if n not in named]
        if missing:
            raise ValueError(f"features names no module {missing}; names are those of model.named_modules(), "
                             f"e.g. {[n for n in list(named)[1:6]]}")
        if len(features) < 2:
            raise ValueError(f"AZ-NAS needs at least 2 features, got features={list(features)!r}")
        return "named", [(n, named[n]) for n in features]
    if callable(getattr(model, "extract_cell_features", None)):
        return "extract_cell_features", []
    if _is_nb201(model):
        return "nb201", [("stem", model.stem), *[(f"cells.{i}", c) for i, c in enumerate(model.cells)]]
    blocks = _blocks_in(model, "", False)
    if blocks:
        return "blocks", blocks
    activations = [(n, m) for n, m in model.named_modules() if is_activation(m)]
    if activations:
        return "activations", activations
    raise ValueError(
        f"AZ-NAS found no features in {type(model).__name__}: no extract_cell_features(), no NB201 stem/cells, no "
        "blocks (modules with submodules inside an nn.Sequential/nn.ModuleList) and no activation modules; "
        "pass features=[module names] whose outputs are the features, in forward order"
    )


def _nb201_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``extract_cell_features`` of the official ``tss_model.TinyNetwork``: stem output, each cell's output."""
    feature = net.stem(x)
    features = [feature]
    for cell in net.cells:
        feature = cell(feature)
        features.append(feature)
    return features


def _hooked_features(kind: str, modules: list[tuple[str, nn.Module]]) -> Callable[[nn.Module, torch.Tensor], list]:
    """An extractor running the whole forward with hooks on ``modules``: their outputs in call order
    (and, for blocks, the input of the first block called, unless that is the model's input)."""

    def extract(net: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor, int]]:
        records: list[tuple[str, torch.Tensor, int]] = []  # (name, tensor, its version when recorded)

        def record(name, value):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"AZ-NAS: the output of {name!r} is a {type(value).__name__}, not a tensor; "
                                "pass features=[module names] whose outputs are tensors")
            records.append((name, value, value._version))

        def output_hook(name):
            return lambda module, args, output: record(name, output)

        def first_input_hook(name):
            def hook(module, args):
                if not records and args and isinstance(args[0], torch.Tensor) and args[0] is not x:
                    record(f"input of {name}", args[0])
            return hook

        handles = []
        try:
            for name, module in modules:
                if kind == "blocks":
                    handles.append(module.register_forward_pre_hook(first_input_hook(name)))
                handles.append(module.register_forward_hook(output_hook(name)))
            net(x)
        finally:
            for handle in handles:
                handle.remove()
        return records

    return extract


class _Runner(nn.Module):
    """Runs an extractor on ``net`` under ``torch.func.functional_call`` (temporary weights)."""

    def __init__(self, net: nn.Module, extract):
        super().__init__()
        self.net = net
        self.extract = extract

    def forward(self, x):
        return self.extract(self.net, x)


def cell_features(model: nn.Module, x: torch.Tensor, tensors: Mapping[str, torch.Tensor] | None = None,
                  features: FeatureSpec = None) -> tuple[list[torch.Tensor], bool]:
    """The features of one forward of ``model`` on ``x`` (with ``tensors`` as its parameters, if given).

    Returns ``(features, chained)``: ``chained`` is True for the NB201 / ``extract_cell_features``
    features (consecutive features are one cell apart: each backward may free its subgraph).
    Call inside ``scoring_context``.
    """
    kind, modules = feature_modules(model, features)
    if kind == "nb201":
        extract = _nb201_features
    elif kind == "extract_cell_features":
        extract = lambda net, inputs: list(net.extract_cell_features(inputs))  # noqa: E731
    else:
        extract = _hooked_features(kind, modules)
    if tensors:
        result = torch.func.functional_call(_Runner(model, extract), {f"net.{k}": v for k, v in tensors.items()},
                                            (x,), strict=False, tie_weights=True)
    else:
        result = extract(model, x)
    if kind in ("nb201", "extract_cell_features"):
        out = list(result)
    else:
        out = []
        for name, value, version in result:
            if value._version != version:
                raise ValueError(f"AZ-NAS: the output of {name!r} was modified in place by a later layer; pass "
                                 "features=[module names] whose outputs are left alone")
            out.append(value)
    batch = x.shape[0]
    for i, f in enumerate(out):
        if not isinstance(f, torch.Tensor) or f.dim() < 2 or f.shape[0] != batch:
            raise ValueError(f"AZ-NAS: feature {i} must be a tensor (B={batch}, C, ...), got "
                             f"{tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__}")
    if len(out) < 2:
        raise ValueError(f"AZ-NAS needs at least 2 features, the forward produced {len(out)} ({kind}); "
                         "pass features=[module names]")
    return out, kind in ("nb201", "extract_cell_features")


# ------------------------------------------------------------------ the components


def _rows(t: torch.Tensor) -> torch.Tensor:
    """One row per (sample, position), one column per channel: (B, C, H, W) as the official
    ``permute(0, 2, 3, 1)``; (B, N, C) token tensors as they are; (B, C) as it is; (B, C, *) channels last."""
    if t.dim() == 4:
        b, c, h, w = t.size()
        return t.permute(0, 2, 3, 1).contiguous().view(b * h * w, c)
    if t.dim() == 3:
        return t.reshape(-1, t.shape[-1])
    if t.dim() == 2:
        return t
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def feature_entropies(features: Sequence[torch.Tensor], mode: Mode = "official") -> np.ndarray:
    """The eigenvalue entropy ``sum -p log(p + 1e-8)`` of each feature's channel covariance (float64 array).

    ``official``: float32 covariance and ``eigvalsh`` as the official code (rank-deficient covariances
    give tiny negative eigenvalues, whose log is NaN). ``clean``: float64 covariance and ``eigvalsh``,
    eigenvalues clamped at 0. A zero feature (0/0) is NaN in both modes.
    """
    values = []
    for feature in features:
        feat = _rows(feature.detach())
        if mode == "clean":
            feat = feat.to(torch.float64)
        feat = feat - feat.mean(dim=0, keepdim=True)
        sigma = torch.mm(feat.transpose(1, 0), feat) / feat.size(0)
        s = torch.linalg.eigvalsh(sigma)
        if mode == "clean":
            s = s.clamp(min=0)
        p = s / s.sum()
        values.append(((-p) * torch.log(p + 1e-8)).sum().item())
    return np.array(values, dtype=np.float64)


def expressivity_from_features(features: Sequence[torch.Tensor], mode: Mode = "official") -> dict[str, float]:
    """``{"expressivity": sum of the entropies, "progressivity": min of their consecutive increases}``
    (NaN becomes -inf, as the official code)."""
    entropies = feature_entropies(features, mode)
    with np.errstate(invalid="ignore"):
        progressivity = np.min(entropies[1:] - entropies[:-1])
        expressivity = np.sum(entropies)
    return {"expressivity": _nan_to_minus_inf(expressivity), "progressivity": _nan_to_minus_inf(progressivity)}


def _match_resolution(g_in: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    """``g_in`` at ``g_out``'s positions: ``PixelUnshuffle`` (official) when the resolution shrinks by an
    integer factor; otherwise (not in the official code) adaptive average pooling."""
    if g_in.dim() == 4:
        (hi, wi), (ho, wo) = g_in.shape[2:], g_out.shape[2:]
        if (hi, wi) == (ho, wo):
            return g_in
        if hi % ho == 0 and wi % wo == 0 and hi // ho == wi // wo:
            return nn.functional.pixel_unshuffle(g_in, hi // ho)
        return F.adaptive_avg_pool2d(g_in, (ho, wo))
    if g_in.dim() == 3 and g_in.shape[1] != g_out.shape[1]:  # tokens (B, N, C)
        return F.adaptive_avg_pool1d(g_in.transpose(1, 2), g_out.shape[1]).transpose(1, 2)
    return g_in


def trainability_from_features(features: Sequence[torch.Tensor], *, retain_graph: bool = False) -> float:
    """Mean over consecutive feature pairs (last first) of ``-s - 1/(s + 1e-6) + 2`` (module docstring).

    Draws ``torch.bernoulli`` signs from the global RNG of the features' device, one tensor per pair
    in the official order, and back-propagates them with ``torch.autograd.grad`` (the features must
    carry their autograd graph). An identity pair (``g_in == g_out``) scores ``-inf``. Pairs whose
    features have different ranks, or where ``f_i`` does not depend on ``f_{i-1}``, are left out
    (neither occurs in NB201). NaN becomes -inf.
    """
    scores = []
    for i in reversed(range(1, len(features))):
        f_out, f_in = features[i], features[i - 1]
        g_out = (torch.bernoulli(torch.ones_like(f_out) * 0.5) - 0.5) * 2
        if not (f_out.requires_grad and f_in.requires_grad) or f_out.dim() != f_in.dim():
            continue
        (g_in,) = torch.autograd.grad(outputs=f_out, inputs=f_in, grad_outputs=g_out, retain_graph=retain_graph,
                                      allow_unused=True)
        if g_in is None:
            continue
        if g_out.size() == g_in.size() and torch.all(g_in == g_out):
            scores.append(-math.inf)
            continue
        g_in = _match_resolution(g_in, g_out)
        g_out_rows, g_in_rows = _rows(g_out), _rows(g_in)
        if g_in_rows.shape[0] != g_out_rows.shape[0]:
            continue
        mat = torch.mm(g_in_rows.transpose(1, 0), g_out_rows) / g_out_rows.shape[0]
        if mat.size(0) < mat.size(1):
            mat = mat.transpose(0, 1)
        s = torch.linalg.svdvals(mat).max().item()
        scores.append(-s - 1 / (s + 1e-6) + 2)
    if not scores:
        return -math.inf
    return _nan_to_minus_inf(np.mean(scores))


def _nan_to_minus_inf(value) -> float:
    value = float(value)
    return -math.inf if math.isnan(value) else value


# ------------------------------------------------------------------ the scorer


def _check_inputs(inputs, noise: bool) -> torch.Tensor:
    if not noise:
        return check_batch(inputs, None)[0]
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        got = inputs.dtype if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise TypeError(f"inputs must be a floating-point torch.Tensor (with noise=True only its shape and dtype "
                        f"are used), got {got}")
    if inputs.dim() < 2 or inputs.shape[0] < 2:
        raise ValueError(f"inputs must be batched, shape (B, ...) with B >= 2, got shape {tuple(inputs.shape)}")
    return inputs


def az_nas_components(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                      init: Init = "official", mode: Mode = "official", noise: bool = False,
                      features: FeatureSpec = None, seed: int | None = None,
                      components: Sequence[str] = COMPONENTS) -> dict[str, float]:
    """AZ-NAS ``{"expressivity", "progressivity", "trainability"}`` of one network, higher is better.

    One forward pass in train mode (BatchNorm on batch statistics; dropout off), then one backward
    per feature pair for trainability (skipped when ``components`` leaves trainability out).

    Args:
        model: any network; left exactly as found (weights, buffers, modes, flags, ``.grad``, RNG).
        inputs: float tensor (B, ...) with B >= 2: the batch the features are computed on (the
            official NB201 notebook uses B = 64; BatchNorm makes the values depend on B).
        targets: ignored (labels are not needed); may be None.
        init: ``"official"`` (default): the scorer's own re-initialisation, as the official code
            always does: Kaiming-normal (fan_in, relu) Conv2d/Linear weights, zero biases,
            BatchNorm2d/GroupNorm affine 1/0, drawn from the global RNG in ``model.apply`` order, on
            temporary tensors (``torch.func.functional_call``); ``None``: the weights as they are.
        mode: ``"official"`` (default): float32 ``eigvalsh`` as the official code, so a rank-deficient
            covariance (e.g. NB201's all-``skip_connect`` cell from stage 3 on) makes expressivity and
            progressivity ``-inf``. ``"clean"``: float64 covariances and eigenvalues clamped at 0,
            finite there. Trainability is the same in both.
        noise: feed ``torch.randn_like(inputs)`` (drawn from the global RNG after the re-initialisation,
            as the official ``trainloader=None`` branch used by its NB201 notebook) instead of the
            inputs; only their shape, dtype and device are used.
        features: module names whose outputs are the features, in forward order (default: see below).
        seed: draw the re-initialisation, the noise and the trainability signs from a generator seeded
            with ``seed`` (the global RNG state is restored afterwards); None (default): from the global
            RNG as it is, like the official code (seed it right before the call to reproduce it).
        components: the components to compute (a subset of ``COMPONENTS``).

    Features: a model with ``extract_cell_features(x)`` (AZ-NAS's own models) uses it; an NB201
    network (``stem`` and ``cells`` as AutoDL's ``TinyNetwork``) gives the stem output and the output
    of each cell, as the official ``extract_cell_features``. Otherwise (generic fallback) the
    *blocks*: the modules with submodules that are elements of an ``nn.Sequential`` (or of an
    ``nn.ModuleList`` outside any block), taking the finest such list (a block holding a
    ``Sequential`` of blocks is replaced by them): timm ResNet's ``BasicBlock``/``Bottleneck``s,
    ConvNeXt's ``ConvNeXtBlock``s, MobileNet/EfficientNet's inverted residuals, ViT's ``Block``s,
    an ``nn.Sequential`` of ``nn.Sequential`` sub-blocks. The features are the input of the first
    block (the stem's output, unless it is the model's input) and each block's output. A network
    without blocks (an ``nn.Sequential`` of single layers) uses the output of each activation
    module. 4-D features are (B, C, H, W); 3-D ones are tokens (B, N, C).

    Values: ``-inf`` where the official code gives NaN (expressivity/progressivity of a zero or
    rank-deficient feature in official mode) or ``-inf`` (trainability with an identity cell:
    ``g_in == g_out`` exactly; then progressivity is usually 0.0). A cell of ``none`` ops (zero
    gradient) scores ``-1e6 + 2`` in trainability.
    """
    if init not in _INITS:
        raise ValueError(f"init must be 'official' (the official Kaiming re-initialisation) or None (the "
                         f"weights as they are), got {init!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be 'official' (float32 eigenvalues, as the official code) or 'clean' "
                         f"(float64), got {mode!r}")
    components = tuple(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ValueError(f"components must be a non-empty subset of {COMPONENTS}, got {components!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    inputs = _check_inputs(inputs, noise)
    device = model_device(model, inputs.device)
    x = prepare_inputs(model, inputs, device)
    feature_modules(model, features)  # refuse a model without features before any work
    want_trainability = "trainability" in components
    with scoring_context(model, device):
        if seed is not None:  # the RNG states are forked by scoring_context and restored on exit
            torch.random.default_generator.manual_seed(seed)
            if device.type == "cuda":
                with torch.cuda.device(device):  # the model's device: scoring_context forked its RNG
                    torch.cuda.manual_seed(seed)
        tensors = kaiming_fanin_tensors(model) if init == "official" else None
        x = torch.randn_like(x) if noise else x.detach()
        # the official scorer differentiates through the weights' graph; here the input carries it
        # (the same cell-to-cell gradients, no weight gradients)
        x = x.clone().requires_grad_(want_trainability)
        feats, chained = cell_features(model, x, tensors, features)
        result = {}
        if "expressivity" in components or "progressivity" in components:
            result.update(expressivity_from_features(feats, mode))
        if want_trainability:
            result["trainability"] = trainability_from_features(feats, retain_graph=not chained)
    return {name: result[name] for name in components}


@register_score("az_expressivity", needs_labels=False, data_dependent=True)
def az_expressivity_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                          init: Init = "official", mode: Mode = "official", noise: bool = False,
                          features: FeatureSpec = None, seed: int | None = None) -> float:
    """AZ-NAS expressivity: sum over the cell features of their covariance-eigenvalue entropy.

    One forward pass, no backward. Options as :func:`az_nas_components` (defaults: the official
    Kaiming re-initialisation from the global RNG, official float32 arithmetic, the given inputs).
    ``-inf`` where the official code gives NaN (a zero or, in official mode, rank-deficient feature).
    """
    return az_nas_components(model, inputs, targets, init=init, mode=mode, noise=noise, features=features,
                             seed=seed, components=("expressivity",))["expressivity"]


@register_score("az_progressivity", needs_labels=False, data_dependent=True)
def az_progressivity_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                           init: Init = "official", mode: Mode = "official", noise: bool = False,
                           features: FeatureSpec = None, seed: int | None = None) -> float:
    """AZ-NAS progressivity: the smallest increase of the feature entropy from one cell to the next.

    One forward pass, no backward. Options as :func:`az_nas_components`. 0.0 when a cell is the
    identity; ``-inf`` where the official code gives NaN (as expressivity).
    """
    return az_nas_components(model, inputs, targets, init=init, mode=mode, noise=noise, features=features,
                             seed=seed, components=("progressivity",))["progressivity"]


@register_score("az_trainability", needs_labels=False, data_dependent=True)
def az_trainability_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                          init: Init = "official", mode: Mode = "official", noise: bool = False,
                          features: FeatureSpec = None, seed: int | None = None) -> float:
    """AZ-NAS trainability: mean over cells of ``-s - 1/(s + 1e-6) + 2``, s the spectral norm of a cell's gradient map.

    One forward, then one backward per cell of random signs (``torch.bernoulli`` from the global
    RNG, after the re-initialisation draws, last cell first). Options as :func:`az_nas_components`.
    ``-inf`` when a cell is the identity (``g_in == g_out`` exactly); about ``-1e6`` per zero cell.
    """
    return az_nas_components(model, inputs, targets, init=init, mode=mode, noise=noise, features=features,
                             seed=seed, components=("trainability",))["trainability"]


def _check_az_members(members: Sequence[str]) -> tuple[str, ...]:
    members = tuple(members)
    if not members or any(m not in AZ_NAS_MEMBERS for m in members) or len(set(members)) != len(members):
        raise ValueError(f"az_nas members must be distinct names among {AZ_NAS_MEMBERS}, got {members!r}")
    return members


def az_nas_rank(table: Sequence[Mapping[str, float | None]], members: Sequence[str] = AZ_NAS_MEMBERS) -> list[float]:
    """AZ-NAS values of the candidates in ``table`` (``az_nas_scores`` results): ``sum_k log(rank_k / N)``.

    Ranks 1 (worst) .. N (best) per member, ties averaged, NaN / None / ``-inf`` ranked worst (as
    :func:`~.ranking.rank_ensemble`). Relative: a value only means something among ``table``.
    """
    return rank_ensemble(table, _check_az_members(members))


@register_score("az_nas", needs_labels=False, data_dependent=True, combine=az_nas_rank)
def az_nas_scores(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                  members: Sequence[str] = AZ_NAS_MEMBERS, init: Init = "official", mode: Mode = "official",
                  noise: bool = False, features: FeatureSpec = None, seed: int | None = None) -> dict[str, float]:
    """AZ-NAS rank aggregate: one network's members (the three components, flops); ``az_nas_rank`` ranks them.

    Returns ``{az_expressivity, az_progressivity, az_trainability, flops}``; a search ranks the
    candidates with :func:`az_nas_rank` (the registered ``combine``): ``sum_k log(rank_k / N)``.

    The three components come from one :func:`az_nas_components` call (one forward, the
    trainability backward passes); ``flops`` is the library's ``flops`` score (FLOPs of one sample,
    which ranks NB201 cells as xautodl's FLOPs). ``members`` selects a subset (an ablation); the
    other options are :func:`az_nas_components`'s.
    """
    members = _check_az_members(members)
    wanted = tuple(c for c in COMPONENTS if f"az_{c}" in members)
    values: dict[str, float] = {}
    if wanted:
        components = az_nas_components(model, inputs, targets, init=init, mode=mode, noise=noise, features=features,
                                       seed=seed, components=wanted)
        values.update({f"az_{c}": v for c, v in components.items()})
    if "flops" in members:
        values["flops"] = float(score_info("flops").fn(model, inputs, None))
    return {name: values[name] for name in members}
