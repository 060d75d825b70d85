"""ZiCo (Li, Yang, Bhardwaj & Marculescu, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation
on Gradients", ICLR 2023).

The batch is split into ``batches`` equal parts, in order. For each part the network (train
mode, BatchNorm on that part's statistics) gives the cross-entropy loss ``L_b`` (mean over the
part) and its gradient ``g_b`` with respect to the weight of every Conv/Linear layer (biases and
normalisation parameters are not measured). For each layer, with ``G`` the (parts x weights)
stack of its gradients,

    sigma = std(G over parts)  (ddof 0),   mu = mean(|G| over parts),
    layer term = log(sum over the weights with sigma != 0 of mu / sigma)

(no term when that sum is 0, e.g. a layer whose gradient is the same in every part). The score is
the sum of the layer terms. With two parts each weight contributes ``(|g1| + |g2|) / |g1 - g2|``:
weights whose gradient is large and consistent across the data score high.

Official code: SLDGroup/ZiCo @b0fec65, ``ZeroShotProxy/compute_zico.py::getzico`` (default
``--maxbatch 2``; the AZ-NAS NB201 pipeline uses two batches of 64). Its arithmetic is numpy
float32 (``np.std``/``np.mean`` over the parts, ``np.sum``, ``np.log``, a float32 running sum),
which :func:`zico_from_gradients` reproduces bit for bit on the same gradients.

**Numerical conditioning.** A weight whose two gradients nearly agree contributes
``(|g1| + |g2|) / |g1 - g2|``, a ratio of a number to a rounding-size difference: single weights
reach 1e5 on the NB201 reference cells, so the score moves by ~0.1-1 % with the float32
rounding of the backward pass (thread count, CPU instruction set, float32 vs float64). Two runs
on the same machine and settings agree exactly; across machines expect ~1e-3 relative.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._hooks import measured_layers
from ._isolation import scoring_context
from ._validation import check_batch, check_labels, logits_of, model_device, prepare_inputs
from .registry import register_score

__all__ = ["zico_score", "zico_from_gradients", "zico_weights", "loss_weight_gradients"]


def zico_weights(model: nn.Module) -> list[torch.Tensor]:
    """The weights ZiCo measures: the ``weight`` of every ``nn.Conv1d/2d/3d`` and ``nn.Linear``
    (subclasses included) in ``model.modules()`` order, each tensor once.

    The official code measures ``nn.Conv2d`` and ``nn.Linear``; 1-D/3-D convolutions are added so
    the score means something on such networks (no effect on 2-D networks such as NB201).
    """
    weights = [m.weight for m in measured_layers(model) if isinstance(m.weight, torch.Tensor)]
    return list({id(w): w for w in weights}.values())  # a shared layer (or tied weight) counts once


def _as_array(grad) -> np.ndarray:
    if isinstance(grad, torch.Tensor):
        grad = grad.detach()
        if grad.dtype not in (torch.float32, torch.float64):
            grad = grad.float()  # half/bfloat16 gradients: float32 arithmetic as the official code
        return grad.cpu().reshape(-1).numpy()
    array = np.asarray(grad)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    return array.reshape(-1)


def zico_from_gradients(per_batch_grads: Sequence[Sequence[torch.Tensor | np.ndarray | None]]) -> float:
    """ZiCo from weight gradients: ``per_batch_grads[b][l]`` is layer ``l``'s loss gradient on part ``b``.

    Args:
        per_batch_grads: one sequence per part (at least 2), each with the gradients of the same
            layers in the same order (tensors or arrays of any shape; the layer's shape must agree
            across parts). A layer whose gradient is ``None`` in any part (it did not take part in
            the loss) is skipped, as the AZ-NAS port of ZiCo does (the official code crashes).

    Returns the sum over layers of ``log(sum(mu / sigma over weights with sigma != 0))`` in numpy
    float32 (float64 if the gradients are float64), exactly the official arithmetic; 0.0 when no
    layer has a weight whose gradient differs between parts (e.g. an NB201 cell of ``none`` ops,
    whose weight gradients are all 0); NaN if a gradient is NaN.
    """
    parts = [list(p) for p in per_batch_grads]
    if len(parts) < 2:
        raise ValueError(f"zico needs the gradients of at least 2 parts of the batch, got {len(parts)} "
                         "(the score is the gradients' mean over their spread across parts)")
    n_layers = len(parts[0])
    if any(len(p) != n_layers for p in parts):
        raise ValueError(f"every part must give the same layers; got {[len(p) for p in parts]} gradients per part")
    total = None
    for layer in range(n_layers):
        grads = [p[layer] for p in parts]
        if any(g is None for g in grads):
            continue
        arrays = [_as_array(g) for g in grads]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ValueError(f"layer {layer}: the gradient has a different size in different parts "
                             f"({[a.size for a in arrays]})")
        stacked = np.stack(arrays)  # (parts, weights), as the official np.array(list of grads)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            sigma = np.std(stacked, axis=0)
            mu = np.mean(np.abs(stacked), axis=0)
            keep = sigma != 0
            layer_sum = np.sum(mu[keep] / sigma[keep])
            if layer_sum != 0:
                term = np.log(layer_sum)
                total = term if total is None else total + term
    return 0.0 if total is None else float(total)


def _split(inputs: torch.Tensor, targets: torch.Tensor, batches) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(batches, bool) or not isinstance(batches, (int, np.integer)) or batches < 2:
        raise ValueError(f"batches must be an integer >= 2 (the number of parts the batch is split into; "
                         f"the official default is 2), got {batches!r}")
    size = inputs.shape[0]
    if size % batches or size // batches < 2:
        raise ValueError(
            f"zico splits the batch into batches={batches} equal parts of at least 2 samples (BatchNorm "
            f"runs on each part's statistics); a batch of {size} samples does not split so. Pass a batch "
            f"of {max(2 * batches, size - size % batches)} samples (a multiple of {batches}, at least "
            f"{2 * batches}), or change batches= (official: 2 parts of 64, i.e. inputs[:128])"
        )
    part = size // batches
    return [(inputs[i * part:(i + 1) * part], targets[i * part:(i + 1) * part]) for i in range(batches)]


def loss_weight_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                          weights: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """``d cross_entropy(logits(inputs), targets) / d weights`` for one part (inside ``scoring_context``,
    with ``requires_grad`` set on ``weights``); ``None`` for a weight the loss does not use."""
    logits = logits_of(model(inputs))
    if logits.dim() != 2:
        raise ValueError(f"zico needs logits of shape (B, classes), got {tuple(logits.shape)}")
    check_labels(targets, logits.shape[1], f"the model has {logits.shape[1]} logits")
    loss = F.cross_entropy(logits, targets)
    if not weights:
        return []
    if not loss.requires_grad:
        return [None] * len(weights)
    return list(torch.autograd.grad(loss, list(weights), allow_unused=True))


@register_score("zico", needs_labels=True, data_dependent=True)
def zico_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, batches: int = 2) -> float:
    """ZiCo: sum over Conv/Linear layers of log(sum of mean|grad| / std(grad) across batch parts) (higher is better).

    The batch is split into ``batches`` equal parts in order (official: two batches of 64, here
    ``inputs[:128]`` gives ``inputs[:64]`` then ``inputs[64:128]``). For each part: one forward
    pass in train mode (BatchNorm on the part's statistics), the mean cross-entropy of the logits,
    and its gradient with respect to the weights of every ``nn.Conv1d/2d/3d`` and ``nn.Linear``
    (``torch.autograd.grad``; biases and normalisation layers are not measured; the official
    code has Conv2d and Linear). Then :func:`zico_from_gradients`. No re-initialisation: the
    official code scores the network as given. No hooks.

    Args:
        model: returns logits (B, classes) or a tuple ending in them (AutoDL NB201 networks);
            scored in train mode with dropout/drop-path off; left exactly as found (``.grad``
            untouched).
        inputs: float tensor (B, ...); B a multiple of ``batches`` with at least 2 samples per part.
        targets: integer labels (B,) below the number of logits.
        batches: number of parts (>= 2; official 2). The score depends on it and on the part size.

    Returns 0.0 when no weight gradient differs between parts (an NB201 cell of ``none`` ops
    only: every gradient is 0); NaN if the gradients are NaN. The value is sensitive to float32
    rounding at the ~1e-3 level (see the module docstring).
    """
    if targets is None:
        raise ValueError("zico needs labels: pass integer class targets of shape (B,)")
    inputs, targets = check_batch(inputs, targets)
    parts = _split(inputs, targets, batches)
    device = model_device(model, inputs.device)
    weights = zico_weights(model)
    flags = [w.requires_grad for w in weights]
    per_part = []
    with scoring_context(model, device):
        try:
            for w in weights:
                w.requires_grad_(True)
            for x, y in parts:
                x, y = prepare_inputs(model, x, device), y.to(device)
                grads = loss_weight_gradients(model, x, y, weights)
                per_part.append([None if g is None else g.detach() for g in grads])
        finally:
            for w, flag in zip(weights, flags):
                w.requires_grad_(flag)
    return zico_from_gradients(per_part)
