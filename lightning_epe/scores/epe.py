"""EPE-NAS (Lopes, Alirezazadeh & Alexandre, 2021): intra-class correlations of input gradients.

``reference=True`` reproduces the official code (VascoLopes/EPE-NAS @22bd341) operation for
operation: float32 input gradient of the summed logits, then numpy float64 ``corrcoef`` per class
in order of first appearance. The default path computes the same correlations in float64 with
torch on the model's device, with no host round trip.
"""
from __future__ import annotations

import math
from typing import Literal, Union

import numpy as np
import torch
from torch import nn

from ._common import check_batch, input_gradient, model_device, scoring_context

ClassCount = Union[Literal["official", "true"], int]
OFFICIAL_CLASS_COUNT = 10  # the official search never passes n_classes, so its default 10 is used
EPSILON = 1e-5  # k in log(|r| + k)


def resolve_class_count(class_count: ClassCount, num_logits: int, targets: torch.Tensor) -> int:
    """The class count that selects the combination branch (<= 100: sum of |E_c|; > 100: pairwise)."""
    if class_count == "official":
        return OFFICIAL_CLASS_COUNT
    if class_count == "true":
        count = num_logits
    elif isinstance(class_count, int) and not isinstance(class_count, bool) and class_count >= 1:
        count = class_count
    else:
        raise ValueError(
            f"class_count must be 'official' (the official code's fixed 10), 'true' (the number of "
            f"logits the model outputs) or a positive int, got {class_count!r}"
        )
    top = int(targets.max())
    if top >= count:
        raise ValueError(f"label {top} is out of range for {count} classes (class_count={class_count!r})")
    return count


def combine_class_scores(per_class: list[float], class_count: int) -> float:
    """Step 3 of the spec: combine per-class scores E_c (already divided by n_c when > 100 classes)."""
    if class_count <= 100:
        score = 0.0
        for e in per_class:
            score += abs(e)
        return float(score)
    if not per_class:
        return math.nan
    score = 0.0
    for ei in per_class:
        for ej in per_class:
            score += abs(ei - ej)
    return float(score / len(per_class))


def _official_class_scores(jacobian: np.ndarray, labels: np.ndarray, class_count: int) -> list[float]:
    """Per-class E_c exactly as the official ``eval_score_perclass`` (numpy, float64 corrcoef)."""
    rows: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        rows.setdefault(label, []).append(i)
    scores = []
    with np.errstate(all="ignore"):
        for indices in rows.values():
            block = jacobian[indices] if len(indices) > 1 else jacobian[indices[0]]
            corrs = np.corrcoef(block)
            e = np.sum(np.log(abs(corrs) + EPSILON))
            if class_count > 100:
                if corrs.ndim == 0:  # one sample: the official len() raises and the class is dropped
                    continue
                e /= len(corrs)
            scores.append(float(e))
    return scores


def _torch_class_scores(jacobian: torch.Tensor, labels: torch.Tensor, class_count: int) -> list[float]:
    """Per-class E_c in float64 on the jacobian's device: one B x B correlation, summed per class."""
    j = jacobian.to(torch.float64)
    centred = j - j.mean(dim=1, keepdim=True)
    normed = centred / centred.norm(dim=1, keepdim=True)  # a constant row gives NaN, as corrcoef
    logs = torch.log((normed @ normed.T).clamp(-1.0, 1.0).abs() + EPSILON)
    _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    same_class = inverse[:, None] == inverse[None, :]
    row_sums = torch.where(same_class, logs, torch.zeros_like(logs)).sum(dim=1)
    sums = torch.zeros(counts.numel(), dtype=torch.float64, device=j.device).index_add_(0, inverse, row_sums)
    if class_count > 100:
        keep = counts > 1  # the official code drops one-sample classes in this branch
        sums = sums[keep] / counts[keep]
    return sums.cpu().tolist()


def epe_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
              class_count: ClassCount = "official", reference: bool = False) -> float:
    """The EPE-NAS score of an untrained ``model`` on one batch (higher is better; NaN is possible).

    Args:
        model: returns logits, or a tuple whose last element is the logits. Scored in train mode;
            left exactly as found (weights, buffers, grads, ``requires_grad``, modes, RNG).
        inputs: float tensor (B, ...) with B >= 2, moved to the model's device.
        targets: integer labels of shape (B,), any integer dtype and device.
        class_count: ``"official"`` (fixed 10, the official search: sum of |E_c| for every data
            set), ``"true"`` (the number of logits: > 100 uses the pairwise branch, as NASLib), or
            an int.
        reference: follow the official computation step for step (numpy correlations on the host).
    """
    inputs, targets = check_batch(inputs, targets)
    device = model_device(model, inputs.device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), inputs.dtype)
    inputs, targets = inputs.to(device=device, dtype=dtype), targets.to(device)
    with scoring_context(model, device):
        jacobian, logits = input_gradient(model, inputs)
    count = resolve_class_count(class_count, logits.shape[-1], targets)
    if reference:
        per_class = _official_class_scores(jacobian.cpu().numpy(), targets.cpu().numpy(), count)
    else:
        per_class = _torch_class_scores(jacobian, targets, count)
    return combine_class_scores(per_class, count)
