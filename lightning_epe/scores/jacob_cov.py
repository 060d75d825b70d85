"""NASWOT v1 / ``jacob_cov`` (Mellor et al., arXiv v1 2020; Abdelfattah et al. 2021).

``J`` is the input gradient of the summed logits (EPE-NAS step 1: one backward pass in train
mode), flattened per sample; ``R = corrcoef(J)`` (B x B, float64) with eigenvalues ``v``; the
score is ``-sum(log(v + k) + 1 / (v + k))`` with ``k = 1e-5``. Decorrelated input gradients (all
eigenvalues near 1) score highest.

The official code (BayesWatch/nas-without-training v1.0 @c895924) scores NB201 networks built
with one output; Abdelfattah et al.'s ``jacob_cov`` uses all logits; both are "the sum of all
logits". Eigenvalues come from ``numpy.linalg.eigvalsh`` (R is symmetric); the official
``numpy.linalg.eig`` gives the same test-vector values to ~1e-15 relative.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._gradients import input_gradient
from ._isolation import scoring_context
from ._validation import check_batch, model_device, prepare_inputs
from .registry import register_score

EPSILON = 1e-5  # k


def jacob_cov_from_jacobian(jacobian: np.ndarray) -> float:
    """The score of a (B, D) gradient matrix; NaN when a row is constant (undefined correlation)."""
    with np.errstate(all="ignore"):
        corrs = np.corrcoef(np.asarray(jacobian, dtype=np.float64))
        if not np.all(np.isfinite(corrs)):
            return math.nan  # the official np.linalg.eig raises here and the score is NaN
        v = np.linalg.eigvalsh(corrs)
        return float(-np.sum(np.log(v + EPSILON) + 1.0 / (v + EPSILON)))


@register_score("jacob_cov", needs_labels=False, data_dependent=True)
def jacob_cov_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None) -> float:
    """NASWOT v1 (jacob_cov): eigenvalue spread of the input-gradient correlations (higher is better).

    Args:
        model: returns logits or a tuple ending in logits; scored in train mode, left as found.
        inputs: float tensor (B, ...) with B >= 2 (compare scores on the same batch).
        targets: ignored (labels are not needed); may be None.

    NaN when a gradient row is constant (e.g. an NB201 cell of ``none`` ops only).
    """
    inputs, _ = check_batch(inputs, None)
    device = model_device(model, inputs.device)
    inputs = prepare_inputs(model, inputs, device)
    with scoring_context(model, device):
        jacobian, _ = input_gradient(model, inputs)
    return jacob_cov_from_jacobian(jacobian.cpu().numpy())
