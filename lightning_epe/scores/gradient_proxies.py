"""Loss-gradient proxies of Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS" (ICLR 2021).

Both use the cross-entropy loss ``L`` of the batch (mean over samples, as ``F.cross_entropy``)
with the network in train mode, and the weights ``theta`` of its Conv/Linear layers (biases and
normalisation parameters are not measured), as ``foresight/pruners/measures/{grad_norm,snip}.py``:

- ``grad_norm = sum over layers of ||dL/dtheta||_2``
- ``snip      = sum over weights of |theta * dL/dtheta|`` (Lee et al. 2019's connection
  sensitivity, the gradient of ``L`` with respect to a multiplicative mask at 1).

The gradients are taken with ``torch.autograd.grad``: the model's ``.grad`` fields are untouched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._hooks import measured_layers
from ._isolation import scoring_context
from ._validation import check_batch, check_labels, logits_of, model_device, prepare_inputs
from .registry import register_score


def loss_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None,
                    score: str) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
    """The measured weights and the gradient of the batch's cross-entropy w.r.t. each (None: unused)."""
    if targets is None:
        raise ValueError(f"{score} needs labels: pass integer class targets of shape (B,)")
    inputs, targets = check_batch(inputs, targets)
    device = model_device(model, inputs.device)
    inputs, targets = prepare_inputs(model, inputs, device), targets.to(device)
    weights = [m.weight for m in measured_layers(model) if isinstance(m.weight, torch.Tensor)]
    weights = list({id(w): w for w in weights}.values())  # a shared layer counts once
    flags = [w.requires_grad for w in weights]
    with scoring_context(model, device):
        try:
            for w in weights:
                w.requires_grad_(True)
            logits = logits_of(model(inputs))
            if logits.dim() != 2:
                raise ValueError(f"{score} needs logits of shape (B, classes), got {tuple(logits.shape)}")
            check_labels(targets, logits.shape[1], f"the model has {logits.shape[1]} logits")
            loss = F.cross_entropy(logits, targets)
            grads = list(torch.autograd.grad(loss, weights, allow_unused=True)) if weights else []
        finally:
            for w, flag in zip(weights, flags):
                w.requires_grad_(flag)
    return weights, grads


@register_score("grad_norm", needs_labels=True, data_dependent=True)
def grad_norm_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """grad_norm: sum over Conv/Linear layers of the L2 norm of the cross-entropy weight gradient.

    Args:
        model: returns logits (B, classes) or a tuple ending in them; train mode; left as found.
        inputs: float tensor (B, ...) with B >= 2.
        targets: integer labels (B,), below the number of logits.
    """
    return grad_norm_from_gradients(*loss_gradients(model, inputs, targets, "grad_norm"))


@register_score("snip", needs_labels=True, data_dependent=True)
def snip_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """SNIP: sum of |theta * dL/dtheta| over Conv/Linear weights, L the cross-entropy of the batch.

    Args:
        model: returns logits (B, classes) or a tuple ending in them; train mode; left as found.
        inputs: float tensor (B, ...) with B >= 2.
        targets: integer labels (B,), below the number of logits.
    """
    return snip_from_gradients(*loss_gradients(model, inputs, targets, "snip"))


def grad_norm_from_gradients(weights: list[torch.Tensor], grads: list[torch.Tensor | None]) -> float:
    """grad_norm from ``loss_gradients``' result (the fused scorer shares one backward with snip)."""
    total = 0.0
    for g in grads:
        if g is not None:
            total += float(torch.linalg.vector_norm(g.detach().to(torch.float64)))
    return total


def snip_from_gradients(weights: list[torch.Tensor], grads: list[torch.Tensor | None]) -> float:
    """snip from ``loss_gradients``' result."""
    total = 0.0
    for w, g in zip(weights, grads):
        if g is not None:
            total += float((w.detach().to(torch.float64) * g.detach().to(torch.float64)).abs().sum())
    return total
