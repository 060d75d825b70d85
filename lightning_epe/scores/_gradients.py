"""Input gradients: d(sum of all logits)/d inputs, as the official EPE-NAS and NASWOT v1 code."""
from __future__ import annotations

import torch
from torch import nn

from ._validation import logits_of


def input_gradient(model: nn.Module, inputs: torch.Tensor,
                   dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J, logits)``: J = d(sum of all logits)/d inputs, flattened to (B, -1), as the official code.

    Only the input gradient is computed (call inside ``scoring_context``). With ``dtype`` (e.g.
    ``torch.float64``), the network runs on temporary copies of its floating-point parameters and
    buffers in that dtype (``torch.func.functional_call``); the model itself is not touched.
    """
    x = inputs.detach().to(dtype or inputs.dtype).requires_grad_(True)
    if dtype is None:
        output = model(x)
    else:
        tensors = {name: t.detach().to(dtype) if t.is_floating_point() else t.detach().clone()
                   for name, t in [*model.named_parameters(), *model.named_buffers()]}
        output = torch.func.functional_call(model, tensors, (x,), tie_weights=True)
    logits = logits_of(output)
    (grad,) = torch.autograd.grad(logits, x, grad_outputs=torch.ones_like(logits))
    return grad.reshape(grad.shape[0], -1), logits.detach()


