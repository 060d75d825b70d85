"""NASWOT v2 (Mellor, Turner, Storkey & Crowley, ICML 2021): the Hamming-kernel log-determinant.

For each hooked activation, the binary code ``c = (input > 0)`` of every sample is flattened and
``K += c c^T + (1 - c)(1 - c)^T`` (B x B: features minus Hamming distance); the score is
``slogdet(K)[1]``. Networks whose samples fall into different linear regions score higher.

Two modes:

- ``"official"`` reproduces BayesWatch/nas-without-training @b3a82a6: every module whose type
  string contains ``'ReLU'`` is hooked (forward hook on its input), so NB201's ``ReLUConvBN``
  wrapper *and* the ``nn.ReLU`` inside it both count: each conv-op input twice. Networks without
  ``nn.ReLU`` (GELU/SiLU/Hardswish timm models) get nothing hooked and score ``-inf``.
- ``"clean"`` (default) hooks each activation module once (``nn.ReLU``, ``ReLU6``, ``GELU``,
  ``SiLU``, ``Hardswish``, ``Mish``, timm's own classes..., see ``_hooks.ACTIVATION_NAMES``;
  wrappers are not activations), with a forward *pre*-hook so in-place activations cannot
  change what is seen.
"""
from __future__ import annotations

import contextlib
from typing import Literal

import torch
from torch import nn

from ._hooks import (
    ACTIVATION_NAMES,
    ActivationSpec,
    HammingKernel,
    activation_predicate,
    hooks,
    official_relu_match,
    select_modules,
)
from ._isolation import scoring_context
from ._validation import check_batch, model_device, prepare_inputs
from .registry import register_score

Mode = Literal["clean", "official"]


@register_score("naswot", needs_labels=False, data_dependent=True)
def naswot_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
                 mode: Mode = "clean", activations: ActivationSpec = None) -> float:
    """NASWOT v2: log-determinant of the Hamming kernel of activation codes (higher is better).

    Args:
        model: any network; scored in train mode, one forward pass without gradients; left
            exactly as found.
        inputs: float tensor (B, ...) with B >= 2. The score depends on B (K is B x B): compare
            scores on the same batch.
        targets: ignored (labels are not needed); may be None.
        mode: ``"clean"`` (each activation module once) or ``"official"`` (the official
            ``'ReLU' in str(type(module))`` matching, wrappers included).
        activations: clean mode only: which modules are activations, as module classes or a
            predicate ``module -> bool`` (default: the usual activation classes of torch and timm).

    Returns ``-inf`` when K is singular (e.g. an NB201 cell of ``none`` ops only: every sample
    gets the same code). In clean mode a network with no activation module raises ``ValueError``
    (functional activations such as ``F.relu`` cannot be hooked).
    """
    inputs, _ = check_batch(inputs, None)
    device = model_device(model, inputs.device)
    inputs = prepare_inputs(model, inputs, device)
    kernel_hooks, kernel = naswot_hooks(model, inputs.shape[0], device, mode=mode, activations=activations)
    with scoring_context(model, device), kernel_hooks, torch.no_grad():
        model(inputs)
    return kernel.logdet()


def naswot_hooks(model: nn.Module, batch: int, device: torch.device, *, mode: Mode = "clean",
                 activations: ActivationSpec = None) -> tuple[contextlib.AbstractContextManager, HammingKernel]:
    """``(hooks, kernel)``: inside ``hooks``, a forward of a batch of ``batch`` adds every hooked activation
    to ``kernel``; the score is ``kernel.logdet()``. (The fused scorer runs them in a shared forward.)"""
    if mode not in ("clean", "official"):
        raise ValueError(f"mode must be 'clean' or 'official', got {mode!r}")
    if mode == "official":
        if activations is not None:
            raise ValueError("activations= applies to mode='clean'; the official mode matches 'ReLU' in the type name")
        modules = select_modules(model, official_relu_match, outermost_only=False)
    else:
        modules = select_modules(model, activation_predicate(activations), outermost_only=True)
        if not modules:
            raise ValueError(
                "naswot found no activation module to hook (looked for "
                f"{', '.join(sorted(ACTIVATION_NAMES))}); functional activations such as F.relu "
                "cannot be hooked. Pass activations=(MyActivation,) or a predicate module -> bool."
            )

    kernel = HammingKernel(batch, device)

    def make_hook(name):
        if mode == "official":
            def hook(module, args, output):
                x = args[0] if isinstance(args, tuple) and args else args
                # the official hook swallows every error (bare except): non-tensors and
                # tensors without the batch as first dimension are skipped
                if isinstance(x, torch.Tensor) and x.dim() >= 1 and x.shape[0] == batch:
                    kernel.add(x)
        else:
            def hook(module, args):
                x = args[0] if args else None
                if not isinstance(x, torch.Tensor):
                    raise TypeError(f"naswot: the input of activation {name!r} is not a tensor")
                if x.dim() < 1 or x.shape[0] != batch:
                    raise ValueError(
                        f"naswot: the input of activation {name!r} has shape {tuple(x.shape)}; the "
                        f"first dimension must be the batch ({batch})"
                    )
                kernel.add(x)
        return hook

    return hooks(modules, make_hook, pre=(mode == "clean")), kernel
