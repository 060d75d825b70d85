"""MeCo (Jiang, Wang & Bie, "Zero-Shot Neural Architecture Search via Minimum Eigenvalue of
Pearson Correlation", NeurIPS 2023).

One forward pass (train mode, no gradients). For each hooked module output, the feature map of
the **first sample** is reshaped to (channels, positions) and its channel correlation matrix
``R = corrcoef`` (C x C) is formed; NaN/inf entries (constant channels, single positions) are set
to 0. The module's term is the smallest eigenvalue of ``R`` (its real part); the score is the sum
of the terms. A layer whose channels are linearly independent over the image positions scores
close to 1, a layer with redundant or dead channels close to 0.

Official code: HamsterMimi/MeCo @0d830dd, ``correlation/NAS_Bench_201.py::get_score(measure='meco')``
with the script defaults (``--batch_size 1``: one CIFAR image; no re-initialisation) on its own
NB201 model ``correlation/foresight/models/nasbench2.py``: a forward hook on **every** module
(containers and wrappers included), ``torch.corrcoef``, ``torch.linalg.eig`` (general, complex),
the float32 results summed with ``torch.sum`` after dropping NaN/inf.

Two modes:

- ``"official"``: the official arithmetic and counting. On an NB201 ``TinyNetwork`` (ours, or
  AutoDL/xautodl's: same module tree) each tensor is counted as many times as the nasbench2 tree
  would count it. That tree wraps a few of the same tensors once more than AutoDL's:
  ``stem.net`` inside ``stem`` (the stem output: 3 hooks instead of 2), each stage's
  ``nn.Sequential`` of 5 cells (the stage's last cell output: 2 instead of 1), and ``top`` around
  the global pooling (a zero term); its root returns the logits (a zero term) where AutoDL's
  returns ``(features, logits)``, on which the official hook fails. Every other module maps 1:1
  (InferCell edges to ``options``, ResNetBasicblock to ``reduction``, ``lastact`` to
  ``top.lastact``). The value then equals the official one to float32 rounding. On any other
  network every module is hooked and reads ``output[0]`` literally, as the official code does on
  its own models (a tuple output gives its first element; where the official code would fail,
  e.g. a 1-channel output, a clear ``ValueError`` is raised).
- ``"clean"`` (default): each distinct feature map once. Every module is hooked (so sums and
  residual additions are seen at their block's output), and each tensor a module returns counts
  once however many modules return it (containers, wrappers, ``Identity``) and however often its
  values recur (an NB201 cell that is the identity adds nothing); a tensor changed in place (an
  in-place ReLU after a BatchNorm) counts again with its new values. Only feature maps count:
  outputs of shape (B, C, ...) with at least 3 dimensions and C >= 2; logits and pooled
  (B, F) vectors (a zero term in the official code) are skipped. Dimension 1 is read as the
  channels (PyTorch's NCHW layout; a channels-last tensor inside a module, e.g. ConvNeXt's
  LayerNorm/MLP, is read as the official code reads it: rows = the first non-batch dimension).
  Eigenvalues with ``torch.linalg.eigvalsh`` (``R`` is symmetric), the sum in float64.

The value depends on the batch only through train-mode BatchNorm statistics (only sample 0 is
read): NB201 best cell 104.10 with one image, 104.66 with 64.
"""
from __future__ import annotations

import contextlib
import math
import weakref
from typing import Iterator, Literal, Sequence

import torch
from torch import nn

from ._isolation import scoring_context
from ._validation import check_inputs_shape, describe_output, logits_of, model_device, prepare_inputs
from .registry import register_score

__all__ = ["meco_score", "meco_from_features", "meco_features", "MecoFeatures", "nb201_meco_multiplicity"]

Mode = Literal["clean", "official"]


def _check_mode(mode) -> None:
    if mode not in ("clean", "official"):
        raise ValueError(f"mode must be 'clean' or 'official', got {mode!r}")


# ---------------------------------------------------------------- arithmetic

def _correlation(feature: torch.Tensor) -> torch.Tensor:
    """``corrcoef`` of the rows of ``feature`` reshaped to (rows, -1), NaN/inf set to 0 (float32 at least)."""
    rows = feature.reshape(feature.shape[0], -1)
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()
    corr = torch.corrcoef(rows)
    return torch.where(torch.isfinite(corr), corr, torch.zeros((), dtype=corr.dtype, device=corr.device))


def _min_eigenvalues(features: list[torch.Tensor], official: bool) -> list[torch.Tensor]:
    """Per feature: the smallest (real part of the) eigenvalue of its zeroed correlation matrix, a 0-d tensor.

    Official: ``torch.linalg.eig`` as the official code (``eigvals`` is faster but not always
    bit-identical); clean: ``eigvalsh``. Matrices of one size are solved in one batched call
    (bit-identical to one call each); a zero matrix (a constant or all-zero feature map, a single
    position) is not solved: its eigenvalues are exactly 0.
    """
    values: list[torch.Tensor] = [torch.zeros(())] * len(features)
    groups: dict[tuple[int, torch.dtype], list[tuple[int, torch.Tensor]]] = {}
    for i, feature in enumerate(features):
        if feature[0].numel() <= 1:  # one position: every correlation is NaN -> the zero matrix
            values[i] = torch.zeros((), dtype=torch.float64 if feature.dtype == torch.float64 else torch.float32)
            continue
        corr = _correlation(feature)
        if not bool(corr.any()):
            values[i] = torch.zeros((), dtype=corr.dtype)
            continue
        groups.setdefault((corr.shape[0], corr.dtype), []).append((i, corr))
    for members in groups.values():
        corrs = torch.stack([corr for _, corr in members]).cpu()
        if official:
            low = torch.linalg.eig(corrs)[0].real.amin(dim=-1)
        else:
            low = torch.linalg.eigvalsh(corrs).amin(dim=-1)
        for (i, _), v in zip(members, low):
            values[i] = v
    return values


def meco_from_features(features: Sequence[torch.Tensor], *, mode: Mode = "clean") -> float:
    """MeCo from recorded feature maps: the sum over entries of the smallest eigenvalue of their channel correlations.

    Args:
        features: one entry per hook call, in hook order: the tensor the official hook calls
            ``data_output[0]`` (for a module returning a (B, C, ...) tensor, sample 0's (C, ...)
            feature map). Rows are its first dimension, columns the rest flattened. The same
            tensor object may appear several times (a tensor several modules return): it is
            computed once and counted each time. :func:`meco_features` records them.
        mode: ``"official"``: ``torch.linalg.eig`` (general solver) and the official float32
            ``torch.sum`` of the terms in this order after dropping NaN/inf; an entry with fewer
            than 2 rows raises (the official code fails there). ``"clean"``: ``eigvalsh``
            (symmetric solver) and a float64 sum; entries with fewer than 2 rows add nothing.

    Returns 0.0 for no entries.
    """
    _check_mode(mode)
    official = mode == "official"
    distinct: dict[int, int] = {}
    unique: list[torch.Tensor] = []
    order: list[int] = []
    for k, feature in enumerate(features):
        if not isinstance(feature, torch.Tensor) or feature.dim() < 1:
            got = tuple(feature.shape) if isinstance(feature, torch.Tensor) else type(feature).__name__
            raise ValueError(f"meco: feature {k} must be a tensor with at least 1 dimension (rows first), got {got}")
        if feature.shape[0] < 2 or feature.numel() == 0:
            if official:
                raise ValueError(
                    f"meco(mode='official'): feature {k} has shape {tuple(feature.shape)}: its correlation matrix "
                    "has fewer than 2 rows, where the official code fails (linalg.eig needs a matrix); "
                    "use mode='clean', which skips such outputs")
            continue
        index = distinct.setdefault(id(feature), len(unique))
        if index == len(unique):
            unique.append(feature.detach())
        order.append(index)
    if not order:
        return 0.0
    values = _min_eigenvalues(unique, official)
    if official:
        dtype = torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.float32
        results = torch.stack([values[i].to(dtype) for i in order])  # the official torch.tensor(result_list)
        return float(torch.sum(results[torch.isfinite(results)]).item())
    total = math.fsum(float(values[i]) for i in order if math.isfinite(float(values[i])))
    return float(total)


# ---------------------------------------------------------------- which modules, how often

def _is_nb201(model: nn.Module) -> bool:
    """An NB201 ``TinyNetwork`` (ours or AutoDL/xautodl's): the module tree nasbench2 maps onto 1:1."""
    cells = getattr(model, "cells", None)
    return (type(model).__name__ == "TinyNetwork" and isinstance(cells, nn.ModuleList) and len(cells) > 0
            and all(type(c).__name__ in ("InferCell", "ResNetBasicblock") for c in cells)
            and all(isinstance(getattr(model, n, None), nn.Module)
                    for n in ("stem", "lastact", "global_pooling", "classifier")))


def nb201_meco_multiplicity(model: nn.Module) -> dict[nn.Module, int]:
    """How many nasbench2 modules return each output of an NB201 ``TinyNetwork`` module beyond one.

    Returns ``{module: count}`` for the modules whose output the official MeCo model
    (``foresight/models/nasbench2.py``) hooks more than once: the stem (``stem.net`` and ``stem``
    wrap AutoDL's ``stem``: 2), the last cell of each stage (the stage's ``nn.Sequential``: 2) and
    the global pooling (``top`` returns it flattened: 2, both zero terms). Every other module
    counts once. The root is handled apart (nasbench2 returns the logits).
    """
    if not _is_nb201(model):
        raise ValueError(f"{type(model).__name__} is not an NB201 TinyNetwork (stem, cells, lastact, "
                         "global_pooling, classifier)")
    counts: dict[nn.Module, int] = {model.stem: 2, model.global_pooling: 2}
    cells = list(model.cells)
    for i, cell in enumerate(cells):
        last_of_stage = i + 1 == len(cells) or type(cells[i + 1]).__name__ == "ResNetBasicblock"
        if type(cell).__name__ == "InferCell" and last_of_stage:
            counts[cell] = 2
    return counts


class MecoFeatures:
    """What :func:`meco_features` records: ``features`` (one entry per counted hook call, in order)."""

    def __init__(self, mode: Mode, root: nn.Module, counts: dict[nn.Module, int] | None):
        self.mode = mode
        self.root = root
        self.counts = counts  # NB201 multiplicities (official mode on a TinyNetwork), else None
        self.features: list[torch.Tensor] = []
        self.feature_maps = 0  # clean mode: outputs of >= 3 dims seen (distinct or not)
        # id(tensor) -> (weak reference, version, recorded entry): a tensor several modules return
        # is copied once (an in-place op in between bumps the version: then it is a new tensor)
        self._seen: dict[tuple[int, str], tuple[weakref.ref, int, torch.Tensor]] = {}
        self._by_value: dict[tuple, list[torch.Tensor]] = {}

    def _cached(self, tensor: torch.Tensor, kind: str):
        seen = self._seen.get((id(tensor), kind))
        if seen is not None and seen[0]() is tensor and seen[1] == tensor._version:
            return True, seen[2]
        return False, None

    def _remember(self, tensor: torch.Tensor, kind: str, entry) -> None:
        self._seen[(id(tensor), kind)] = (weakref.ref(tensor), tensor._version, entry)

    def _official_entry(self, name: str, module: nn.Module, output) -> torch.Tensor:
        """The official hook's ``fea = data_output[0]`` (a copy), failing where the official code fails."""
        where = f"meco(mode='official'): module {name or '<root>'!r} returned {describe_output(output)}"
        if self.counts is not None and module is self.root:
            output = logits_of(output)  # nasbench2's root returns the logits
        if isinstance(output, torch.Tensor):
            source, kind = output, "tensor"  # fea = sample 0
        elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
            source, kind = output[0], "first"  # fea = the whole first element
        else:
            raise ValueError(f"{where}; the official hook reads data_output[0] as a tensor and fails here. "
                             "Use mode='clean'")
        hit, entry = self._cached(source, kind)
        if hit:
            return entry
        fea = source[0] if kind == "tensor" and source.dim() >= 1 else source
        if fea.dim() < 1 or fea.shape[0] < 2:
            raise ValueError(f"{where}: data_output[0] has shape {tuple(fea.shape)}, fewer than 2 rows, so "
                             "its correlation matrix is not a matrix and the official code fails "
                             "(linalg.eig). Use mode='clean'")
        entry = fea.detach().clone()
        same = self._same_values(entry)  # equal values: one entry object, one eigenproblem
        entry = entry if same is None else same
        self._remember(source, kind, entry)
        return entry

    def _clean_entries(self, output) -> list[torch.Tensor]:
        tensors = [output] if isinstance(output, torch.Tensor) else (
            [t for t in output if isinstance(t, torch.Tensor)] if isinstance(output, (tuple, list)) else [])
        entries = []
        for tensor in tensors:
            if tensor.dim() < 3 or tensor.shape[0] < 1:
                continue
            self.feature_maps += 1
            if tensor.shape[1] < 2:
                continue
            hit, _ = self._cached(tensor, "clean")
            if hit:
                continue  # already counted
            feature = tensor[0].detach().clone()
            self._remember(tensor, "clean", feature)
            if self._same_values(feature) is not None:
                continue
            entries.append(feature)
        return entries

    def _same_values(self, feature: torch.Tensor) -> torch.Tensor | None:
        """An earlier recorded feature equal to ``feature`` (same shape and values), else None (and remember it)."""
        flat = feature.reshape(-1)
        # a hash, not a proof: equal tensors give equal sums (same op, same device); torch.equal decides
        key = (tuple(feature.shape), feature.dtype, float(flat.sum()), float(flat.abs().sum()))
        same = self._by_value.setdefault(key, [])
        for other in same:
            if torch.equal(feature, other):
                return other
        same.append(feature)
        return None

    def hook(self, name: str):
        def record(module, args, output):
            if self.mode == "official":
                entry = self._official_entry(name, module, output)
                count = 1 if self.counts is None else self.counts.get(module, 1)
                self.features.extend([entry] * count)
            else:
                self.features.extend(self._clean_entries(output))
        return record


@contextlib.contextmanager
def meco_features(model: nn.Module, mode: Mode = "clean") -> Iterator[MecoFeatures]:
    """Forward hooks recording what MeCo needs during the forward passes run inside; removed on exit.

    ``with meco_features(model, mode) as rec: model(x)`` then ``meco_from_features(rec.features,
    mode=mode)``. Every module of ``model`` gets a forward hook (the root included). Run the
    forward in train mode under ``scoring_context`` (as :func:`meco_score`), without gradients.
    """
    _check_mode(mode)
    counts = nb201_meco_multiplicity(model) if mode == "official" and _is_nb201(model) else None
    recorder = MecoFeatures(mode, model, counts)
    handles = []
    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_hook(recorder.hook(name)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
        recorder._seen.clear()
        recorder._by_value.clear()


def _check_inputs(inputs) -> torch.Tensor:
    inputs = check_inputs_shape(inputs)
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or inf; check the data pipeline and normalisation")
    return inputs


@register_score("meco", needs_labels=False, data_dependent=True)
def meco_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
               mode: Mode = "clean") -> float:
    """MeCo: sum over layers of the smallest eigenvalue of sample 0's channel correlations (higher is better).

    One forward pass in train mode without gradients; every module gets a forward hook. Each
    hooked output's first sample is reshaped to (C, H*W), ``R = corrcoef`` (C x C, NaN/inf -> 0),
    and the smallest eigenvalue of ``R`` is added. No re-initialisation (official default).

    Args:
        model: any network returning a tensor or a tuple (NB201's ``(features, logits)``); scored
            in train mode (BatchNorm on the batch's statistics), dropout/drop-path off, left
            exactly as found.
        inputs: float tensor (B, C, H, W) or (B, ...), B >= 1. Only sample 0 is read; the other
            samples act through the BatchNorm statistics. The official script feeds one CIFAR
            image (``inputs[:1]``); a BatchNorm on (1, C) vectors in train mode cannot run on one
            sample (pass B >= 2 then).
        targets: ignored (labels are not needed); may be None.
        mode: ``"clean"`` (default: every distinct feature map once) or ``"official"`` (the
            official counting, NB201 networks as the nasbench2 module tree; see the module docstring).

    Returns a float >= 0 up to rounding (correlation matrices are positive semi-definite; a layer
    with a constant or dead channel, or a single position, adds 0). Never NaN: NaN correlations
    are zeroed and NaN/inf terms dropped, as in the official code. Clean mode raises ``ValueError`` on a network with
    no (B, C, ...) feature map (e.g. an MLP: every term would be 0).
    """
    _check_mode(mode)
    inputs = _check_inputs(inputs)
    device = model_device(model, inputs.device)
    inputs = prepare_inputs(model, inputs, device)
    with scoring_context(model, device), meco_features(model, mode) as recorder, torch.no_grad():
        try:
            model(inputs)
        except ValueError as error:
            if inputs.shape[0] == 1 and "Expected more than 1 value per channel" in str(error):
                raise ValueError(f"meco: {error} (a BatchNorm in train mode cannot normalise one sample's "
                                 "vector; pass a batch of B >= 2: only sample 0 is scored)") from error
            raise
        features = recorder.features
        if mode == "clean" and recorder.feature_maps == 0:
            raise ValueError(
                "meco found no feature map to score: no module returned a tensor of shape (B, C, ...) "
                "with at least 3 dimensions (MeCo correlates the channels of a feature map over its "
                "positions; (B, F) vectors have one position per channel)")
    return meco_from_features(features, mode=mode)


@register_score("meco_official", needs_labels=False, data_dependent=True)
def meco_official_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None) -> float:
    """MeCo with the official counting (``meco(mode="official")``), under a name of its own for ensembles and tables."""
    return meco_score(model, inputs, targets, mode="official")
