"""Helpers shared by the proxies: activation hooks (NASWOT), batch placement, measured layers.

No Lightning here. Everything that touches the model is temporary: hooks are removed in
``finally`` blocks; modes, flags, buffers and RNG are restored by ``scoring_context``.
"""
from __future__ import annotations

import contextlib
import weakref
from typing import Callable, Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from torch import nn

#: Class names treated as activation functions by NASWOT's ``clean`` mode (matched against the
#: whole MRO, so subclasses count): ReLU-like gates whose sign pattern ``input > 0`` says which
#: side of the kink a unit is on. torch's classes and timm's own (``timm.layers.activations``,
#: ``activations_me``). Sigmoid/Tanh/Hardsigmoid/Softmax are *not* included: in timm they are
#: squeeze-excite gates or attention, not unit nonlinearities.
ACTIVATION_NAMES = frozenset({
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "CELU", "SELU", "GELU", "SiLU",
    "Mish", "Hardswish", "Softplus", "Threshold",
    # timm
    "Swish", "SwishMe", "MishMe", "HardSwish", "HardSwishMe", "HardMish", "HardMishMe",
    "GELUTanh", "QuickGELU",
})

#: Layers whose weights the pruning-based proxies (synflow, snip, grad_norm) measure. The
#: Abdelfattah et al. code measures ``nn.Conv2d`` and ``nn.Linear`` weights (not biases, not
#: normalisation); 1-D/3-D convolutions are included so the proxies mean something there too.
MEASURED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

ActivationSpec = Union[None, Sequence[type], Callable[[nn.Module], bool]]

# float32 sums of 0/1 products are exact below 2**24 terms; chunk the features below that.
_EXACT_CHUNK = 1 << 23


def measured_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, MEASURED_LAYERS)]


def is_activation(module: nn.Module) -> bool:
    """True for the activation modules of :data:`ACTIVATION_NAMES` (or a subclass of one)."""
    return any(cls.__name__ in ACTIVATION_NAMES for cls in type(module).__mro__)


def official_relu_match(module: nn.Module) -> bool:
    """The official NASWOT test: ``'ReLU' in str(type(module))`` (so wrappers such as NB201's
    ``ReLUConvBN`` match too, and GELU/SiLU/Hardswish do not)."""
    return "ReLU" in str(type(module))


def activation_predicate(activations: ActivationSpec) -> Callable[[nn.Module], bool]:
    if activations is None:
        return is_activation
    if callable(activations) and not isinstance(activations, type):
        return activations
    types = (activations,) if isinstance(activations, type) else tuple(activations)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise TypeError(
            f"activations must be None, nn.Module subclasses or a predicate module -> bool, got {activations!r}"
        )
    return lambda module: isinstance(module, types)


def select_modules(model: nn.Module, predicate: Callable[[nn.Module], bool], *,
                   outermost_only: bool) -> list[tuple[str, nn.Module]]:
    """Modules matching ``predicate`` in ``named_modules`` order; with ``outermost_only`` a match
    inside an already selected module is skipped (so each activation is hooked once)."""
    selected: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not predicate(module):
            continue
        if outermost_only and any(name.startswith(p + ".") or p == "" for p, _ in selected):
            continue
        selected.append((name, module))
    return selected


@contextlib.contextmanager
def hooks(modules: Iterable[tuple[str, nn.Module]], make_hook, *, pre: bool) -> Iterator[None]:
    """Register ``make_hook(name)`` on each module (forward pre-hooks if ``pre``); always removed."""
    handles = []
    try:
        for name, module in modules:
            hook = make_hook(name)
            handles.append(module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


class HammingKernel:
    """``K = sum over hooked tensors of c c^T + (1 - c)(1 - c)^T``, ``c = (t > 0)`` per sample.

    The B x B entries are integers (``n`` minus the Hamming distance between the binary codes),
    computed exactly: float32 matmuls of 0/1 codes over feature chunks shorter than 2**24,
    accumulated in float64 (on the CPU for devices without float64, e.g. MPS). Equal to the
    official float32 ``x @ x.t() + (1 - x) @ (1 - x.t())`` summed into a float64 numpy array.
    """

    def __init__(self, batch_size: int, device: torch.device):
        self.batch_size = batch_size
        self.device = torch.device("cpu") if device.type == "mps" else device
        self.K = torch.zeros(batch_size, batch_size, dtype=torch.float64, device=self.device)
        self.count = 0
        # id(tensor) -> (weak reference, version, B x B term): a tensor read by several hooked
        # modules (an NB201 node feeding several convs; a wrapper and its inner ReLU) is coded once
        self._seen: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}

    def term(self, tensor: torch.Tensor) -> torch.Tensor:
        """``c c^T + (1 - c)(1 - c)^T`` for ``c = (tensor > 0)`` flattened per sample (float64)."""
        codes = tensor.detach().reshape(self.batch_size, -1) > 0
        n = codes.shape[1]
        ones = codes.sum(dim=1).to(self.device, torch.float64)
        gram = torch.zeros_like(self.K)
        for start in range(0, n, _EXACT_CHUNK):
            chunk = codes[:, start:start + _EXACT_CHUNK].to(torch.float32)
            gram += (chunk @ chunk.T).to(self.device, torch.float64)
        return 2.0 * gram - ones[:, None] - ones[None, :] + float(n)

    def add(self, tensor: torch.Tensor) -> None:
        seen = self._seen.get(id(tensor))
        if seen is not None and seen[0]() is tensor and seen[1] == tensor._version:
            term = seen[2]
        else:
            term = self.term(tensor)
            self._seen[id(tensor)] = (weakref.ref(tensor), tensor._version, term)
        self.K += term
        self.count += 1

    def logdet(self) -> float:
        """``slogdet(K)[1]`` with numpy in float64 (``-inf`` when K is singular)."""
        self._seen.clear()
        return float(np.linalg.slogdet(self.K.cpu().numpy())[1])
