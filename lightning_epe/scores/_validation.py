"""Input and output checks shared by every score, the search's batches and the callback.

No Lightning here. One place says what a scoring batch is (finite float inputs, B >= 2, integer
labels of shape (B,) within the class count) and how logits are read from a model's output.
"""
from __future__ import annotations

import torch
from torch import nn


def check_batch(inputs: torch.Tensor, targets: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate a scoring batch; return ``(inputs, targets)`` with targets as int64 on the inputs' device."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor (normalised images), got dtype {inputs.dtype}")
    if inputs.dim() < 2:
        raise ValueError(f"inputs must be batched, shape (B, ...), got shape {tuple(inputs.shape)}")
    if inputs.shape[0] < 2:
        raise ValueError(
            f"a score needs a batch of at least 2 samples, got {inputs.shape[0]} "
            "(correlations between samples are undefined for one)"
        )
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or inf; check the data pipeline and normalisation")
    if targets is None:
        return inputs, None
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be a torch.Tensor of integer class labels, got {type(targets).__name__}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class labels, got dtype {targets.dtype}")
    if targets.dim() != 1 or targets.shape[0] != inputs.shape[0]:
        raise ValueError(
            f"targets must have shape (B,) = ({inputs.shape[0]},) to match the inputs, got {tuple(targets.shape)}"
        )
    if (targets < 0).any():
        raise ValueError(f"targets must be class indices >= 0, got minimum {int(targets.min())}")
    return inputs, targets.to(device=inputs.device, dtype=torch.int64)


def check_labels(targets: torch.Tensor, num_classes: int, hint: str = "", where: str = "") -> None:
    """Refuse a label outside ``0 .. num_classes - 1``: the message names it, the accepted range and ``hint``."""
    top = int(targets.max())
    if top >= num_classes:
        raise ValueError(f"{where + ' has ' if where else ''}label {top}, out of range for num_classes={num_classes} "
                         f"(labels must be 0..{num_classes - 1}){'; ' + hint if hint else ''}")


def prepare_inputs(model: nn.Module, inputs: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``inputs`` on ``device`` in the dtype of the model's floating-point parameters."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), inputs.dtype)
    return inputs.to(device=device, dtype=dtype)


def check_inputs_shape(inputs: torch.Tensor) -> torch.Tensor:
    """For scores that only use the input *shape* (flops, synflow): one sample is enough."""
    if not isinstance(inputs, torch.Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise TypeError(f"inputs must be a floating-point tensor (normalised images), got dtype {inputs.dtype}")
    if inputs.dim() < 2 or inputs.shape[0] < 1:
        raise ValueError(f"inputs must be batched, shape (B, ...) with B >= 1, got shape {tuple(inputs.shape)}")
    return inputs


def logits_of(output) -> torch.Tensor:
    """Logits from a model output: a tensor, or a tuple/list whose last element is the logits."""
    if isinstance(output, (tuple, list)) and output:
        output = output[-1]
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"the model must return logits (a tensor) or a tuple whose last element is the logits, "
            f"got {type(output).__name__}"
        )
    return output


def model_device(model: nn.Module, default: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return default
