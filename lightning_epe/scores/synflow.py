"""SynFlow (Tanaka et al. 2020) as a zero-cost proxy (Abdelfattah et al., ICLR 2021).

Definition (``foresight/pruners/measures/synflow.py``, also NASLib's ``synflow``):

1. "linearise": replace every parameter and floating-point buffer by its absolute value;
2. BatchNorm layers are bypassed (the reference copies the network with ``bn=False``, which
   replaces each BatchNorm's forward by the identity);
3. in float64, feed one all-ones input of the batch's sample shape and take ``R = sum(logits)``;
4. score = ``sum |theta * dR/dtheta|`` over the weights of the Conv/Linear layers (biases and
   normalisation parameters are not measured).

No data is used: only the input shape. Nothing is copied or modified: the absolute float64
parameters are substituted with ``torch.func.functional_call`` and BatchNorm is bypassed by
temporary forward hooks. The whole computation is float64, so a deep network whose float32
flow overflows (``R`` beyond 3.4e38) still gets a finite score (float64 reaches 1.8e308).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ._hooks import hooks, measured_layers
from ._isolation import scoring_context
from ._validation import check_inputs_shape, logits_of, model_device
from .registry import register_score


def _bypass(module, args, output):
    return args[0]  # a forward hook returning a value replaces the output: identity BatchNorm


@register_score("synflow", needs_labels=False, data_dependent=False)
def synflow_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None) -> float:
    """SynFlow: sum of |theta * dR/dtheta| of the linearised network on an all-ones input (higher is better).

    Args:
        model: returns logits or a tuple ending in logits; left exactly as found.
        inputs: only the sample shape ``inputs.shape[1:]`` is used (one sample is enough).
        targets: ignored; may be None.

    BatchNorm (every ``nn.modules.batchnorm._BatchNorm``, timm's ``BatchNormAct2d`` included,
    whose fused activation is bypassed with it, as in the reference) is the identity. The
    network runs in eval mode: the reference's train mode differs only for BatchNorm (bypassed)
    and dropout (which would randomise the score). Computed in float64 (on the CPU for devices
    without float64).
    """
    inputs = check_inputs_shape(inputs)
    device = model_device(model, inputs.device)
    compute = torch.device("cpu") if device.type == "mps" else device

    def f64(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to(compute)
        return t.abs().to(torch.float64) if t.is_floating_point() else t

    weights = {id(m.weight) for m in measured_layers(model) if isinstance(m.weight, torch.Tensor)}
    state: dict[str, torch.Tensor] = {}
    measured: list[torch.Tensor] = []
    for name, p in model.named_parameters():
        state[name] = f64(p)
        if id(p) in weights:
            state[name].requires_grad_(True)
            measured.append(state[name])
    for name, b in model.named_buffers():
        state[name] = f64(b)
    if not measured:
        return 0.0

    ones = torch.ones((1, *inputs.shape[1:]), dtype=torch.float64, device=compute)
    batchnorms = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    # eval mode: BatchNorm is bypassed anyway (and a batch of one must not trip its train-mode
    # size check); dropout must not randomise the flow
    with scoring_context(model, device, train=False), hooks(batchnorms, lambda name: _bypass, pre=False):
        logits = logits_of(functional_call(model, state, (ones,), strict=False))
        grads = torch.autograd.grad(logits.sum(), measured, allow_unused=True)
    total = torch.zeros((), dtype=torch.float64, device=compute)
    for w, g in zip(measured, grads):
        if g is not None:
            total += (w.detach() * g).abs().sum()
    return float(total)
