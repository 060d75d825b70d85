"""Size baselines: the number of trainable parameters and the forward FLOPs of one sample.

Neither depends on the data; ``flops`` uses the input shape only. They are the baselines every
zero-cost proxy should beat (Abdelfattah et al. 2021; Ning et al. 2021).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ._isolation import scoring_context
from ._validation import check_inputs_shape, model_device, prepare_inputs
from .registry import register_score


@register_score("params", needs_labels=False, data_dependent=False)
def params_score(model: nn.Module, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None) -> float:
    """params: the number of trainable parameters (``requires_grad``; a shared tensor counts once).

    ``inputs`` and ``targets`` are ignored (may be None).
    """
    total = 0
    for name, p in model.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(f"parameter {name!r} of a lazy module is not initialised yet; run one forward pass first")
        if p.requires_grad:
            total += p.numel()
    return float(total)


@register_score("flops", needs_labels=False, data_dependent=False)
def flops_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None) -> float:
    """flops: forward FLOPs of one sample, counted by ``torch.utils.flop_counter.FlopCounterMode``.

    Args:
        model: any network; run once in eval mode (so BatchNorm accepts a single sample) without
            gradients; left as found.
        inputs: only the first sample is run (its shape is what matters).
        targets: ignored; may be None.

    Counts what FlopCounterMode counts: matrix multiplications and convolutions (2 per
    multiply-add; ``nn.Linear(i, o)``: ``2*i*o``), attention kernels; not elementwise
    operations, normalisation or pooling.
    """
    inputs = check_inputs_shape(inputs)
    device = model_device(model, inputs.device)
    sample = prepare_inputs(model, inputs[:1], device)
    counter = FlopCounterMode(display=False)
    with scoring_context(model, device, train=False), torch.no_grad(), counter:
        model(sample)
    return float(counter.get_total_flops())
