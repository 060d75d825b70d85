"""Shared helpers for training-free scores: input checks, side-effect isolation, input gradients.

No Lightning here: scores are plain functions of (model, inputs, targets).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

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


@contextlib.contextmanager
def scoring_context(model: nn.Module, device: torch.device, train: bool = True) -> Iterator[None]:
    """Score ``model`` without side effects.

    Inside: gradients enabled, autocast off, the model in train (or eval) mode, parameters not
    requiring grad (only input gradients are needed). On exit the model's buffers (BatchNorm
    running statistics and counters), ``requires_grad`` flags, modes and the global RNG states
    are restored exactly.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "cannot score inside torch.inference_mode(): scores need autograd. Lightning runs "
            "validation/test under inference mode; score in setup/on_fit_start/on_train_start, or "
            "wrap the call in torch.inference_mode(False)."
        )
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=rng_devices), torch.enable_grad(), \
                torch.autocast(device.type, enabled=False):
            model.train(train)
            for p, _ in flags:
                p.requires_grad_(False)
            yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def input_gradient(model: nn.Module, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(J, logits)``: J = d(sum of all logits)/d inputs, flattened to (B, -1), as the official code.

    Only the input gradient is computed (call inside ``scoring_context``).
    """
    x = inputs.detach().requires_grad_(True)
    logits = logits_of(model(x))
    (grad,) = torch.autograd.grad(logits, x, grad_outputs=torch.ones_like(logits))
    return grad.reshape(grad.shape[0], -1), logits.detach()


def model_device(model: nn.Module, default: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return default
