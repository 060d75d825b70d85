"""EPE-NAS (Lopes, Alirezazadeh & Alexandre, 2021): intra-class correlations of input gradients.

``reference=True`` reproduces the official code (VascoLopes/EPE-NAS @22bd341) operation for
operation: float32 input gradient of the summed logits, then numpy float64 ``corrcoef`` per class
in order of first appearance. The default path computes the same input gradient (bit for bit on
CPU: only the input gradient, no parameter gradients) and the same correlations in float64 with
torch on the model's device, with no host round trip. On CPU it also runs stride-1 average pooling
through an exact faster kernel (same additions in the same order: same bits; see ``_cpu_avg_pool``).
``precision="float64"`` runs the network in double precision on temporary copies of its weights:
the accurate (slower) ground truth. Measurements: ``docs/benchmarks/speed.md``.
"""
from __future__ import annotations

import contextlib
import math
from typing import Literal, Union

import numpy as np
import torch
from torch import nn

from ._cpu_avg_pool import fast_cpu_ops
from ._gradients import input_gradient
from ._isolation import scoring_context
from ._validation import check_batch, check_labels, model_device
from .registry import register_score

ClassCount = Union[Literal["official", "true"], int]
Precision = Union[None, Literal["float32", "float64"], torch.dtype]
_PRECISIONS = {"float32": torch.float32, "float64": torch.float64,
               torch.float32: torch.float32, torch.float64: torch.float64}
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
    check_labels(targets, count, f"class_count={class_count!r}")
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


def resolve_precision(precision: Precision, model_dtype: torch.dtype) -> torch.dtype | None:
    """The dtype to run the network in, or ``None`` to run it as it is (its own dtype)."""
    if precision is None:
        return None
    try:
        dtype = _PRECISIONS[precision]
    except (KeyError, TypeError):
        raise ValueError(
            f"precision must be None (the model's own dtype: float32 for an ordinary model, the "
            f"official arithmetic), 'float32' or 'float64', got {precision!r}"
        ) from None
    return None if dtype == model_dtype else dtype


@register_score("epe", needs_labels=True, data_dependent=True)
def epe_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *,
              class_count: ClassCount = "official", reference: bool = False,
              precision: Precision = None) -> float:
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
            The default path gives the same input gradient and the same float64 correlations,
            computed with torch on the model's device (no host round trip); scores agree to ~1e-15.
        precision: the dtype the network runs in. ``None`` (default): the model's own dtype, i.e.
            float32 for an ordinary model, the official arithmetic. ``"float64"``: a double
            precision run on temporary copies of the weights and buffers (the model is not
            touched); about 3x the CPU time, far slower on most GPUs, and the accurate value the
            float32 paths are judged against (the score is numerically fragile: float32 rounding
            moves it by ~5e-5 relative, median). ``"float32"``: a float32 run whatever the
            model's dtype. Both paths honour it.

    Scoring uses true float32 arithmetic whatever the global settings: TF32/bf16 matmul and
    convolution shortcuts and cuDNN autotuning are switched off for the call and restored after.
    """
    inputs, targets = check_batch(inputs, targets)
    device = model_device(model, inputs.device)
    model_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), inputs.dtype)
    run_dtype = resolve_precision(precision, model_dtype)
    inputs, targets = inputs.to(device=device, dtype=run_dtype or model_dtype), targets.to(device)
    with scoring_context(model, device), \
            (contextlib.nullcontext() if reference else fast_cpu_ops(device)):
        jacobian, logits = input_gradient(model, inputs, dtype=run_dtype)
    return epe_from_jacobian(jacobian, targets, logits.shape[-1], class_count=class_count, reference=reference)


def epe_from_jacobian(jacobian: torch.Tensor, targets: torch.Tensor, num_logits: int, *,
                      class_count: ClassCount = "official", reference: bool = False) -> float:
    """The EPE-NAS score of an input gradient ``J`` (B, D) with labels (B,) (steps 2-3 of the spec)."""
    count = resolve_class_count(class_count, num_logits, targets)
    if reference:
        per_class = _official_class_scores(jacobian.cpu().numpy(), targets.cpu().numpy(), count)
    else:
        per_class = _torch_class_scores(jacobian, targets.to(jacobian.device), count)
    return combine_class_scores(per_class, count)
