"""SWAP (Peng et al., ICLR 2024): the number of distinct sample-wise activation patterns.

One forward pass (train mode, no gradients) of a small batch (the official ``correlation.py``
feeds 16 images). Every hooked activation contributes its neurons: a neuron's *pattern* is the
B-bit vector ``(activation of sample b > 0)`` over the batch, and the score is the number of
distinct patterns over all neurons (at most ``2**B``: 65,536 for B = 16). Networks whose neurons
separate the samples in many different ways score higher.

Official code: pym1024/SWAP@f6049f7, ``src/metrics/swap.py``. It hooks the output of every
``nn.ReLU`` whose input is 4-D, concatenates the per-sample flattened outputs into a
(B, neurons) matrix, takes ``sign`` and counts the distinct columns with ``torch.unique(dim=0)``
of the transpose. Here each neuron's B bits are packed into one int64 (bit b = sample b) as each
activation is produced, and the distinct codes are counted (a presence table of ``2**B`` entries
for B <= 24, sorted unique codes beyond): the same count, without the (neurons x B) float matrix
and its row sort (~3.7 s of the official 1.5-5 s on an NB201 cell). Duplicated neurons cannot add
a pattern, so a tensor read by several hooked ReLUs (an NB201 node feeding several convolutions)
is coded once.

The regularised form multiplies by ``exp(-(P_K - mu)**2 / sigma)`` with ``P_K`` the parameter
count in thousands (the official ``count_parameters``: every named parameter whose name does not
contain ``'auxiliary'``).
"""
from __future__ import annotations

import contextlib
import math
import numbers
import weakref
from typing import Iterable, Literal

import torch
from torch import nn

from ._hooks import ACTIVATION_NAMES, ActivationSpec, activation_predicate, hooks, is_activation, select_modules
from ._isolation import scoring_context
from ._reinit import restored_parameters
from ._validation import check_batch, model_device, prepare_inputs
from .registry import register_score

#: Up to this batch size the distinct codes are marked in a presence table of ``2**B`` booleans
#: (16 MiB at most); beyond, sorted unique codes are kept.
_TABLE_BITS = 24
_WORD = 64  # bits per packed int64 word


class ActivationPatterns:
    """The set of distinct binary activation patterns seen so far, over a batch of ``batch_size`` samples.

    ``add(tensor)`` takes a (B, ...) activation: every element after the batch dimension is a
    neuron, active for sample b where ``tensor[b, ...] > 0`` (NaN counts as inactive). ``count()``
    is the number of distinct B-bit patterns over all neurons added (0 before any).
    """

    def __init__(self, batch_size: int, device: torch.device | str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.words = -(-self.batch_size // _WORD)
        self.tensors = 0  # tensors added (duplicates included)
        self.neurons = 0  # neurons added (duplicates skipped)
        self._table = None
        self._codes: list[torch.Tensor] = []  # sorted unique codes (B > _TABLE_BITS)
        self._seen: dict[int, tuple[weakref.ref, int]] = {}
        weights = torch.ones(min(self.batch_size, _WORD), dtype=torch.int64)
        weights[1:] = 2
        self._weights = torch.cumprod(weights, 0).to(self.device)  # 2**b (2**63 wraps to the sign bit)

    def codes(self, tensor: torch.Tensor) -> torch.Tensor:
        """The packed patterns of ``tensor``'s neurons: (neurons,) int64 for B <= 64, else (neurons, words)."""
        bits = tensor.detach().reshape(self.batch_size, -1) > 0
        words = []
        for start in range(0, self.batch_size, _WORD):
            chunk = bits[start:start + _WORD]
            weights = self._weights[:chunk.shape[0], None].to(chunk.device)
            words.append((chunk.to(torch.int64) * weights).sum(0))
        return words[0] if len(words) == 1 else torch.stack(words, 1)

    def add(self, tensor: torch.Tensor) -> None:
        if tensor.dim() < 1 or tensor.shape[0] != self.batch_size:
            raise ValueError(f"an activation of shape {tuple(tensor.shape)} does not have the batch "
                             f"({self.batch_size}) as its first dimension")
        self.tensors += 1
        seen = self._seen.get(id(tensor))
        if seen is not None and seen[0]() is tensor and seen[1] == tensor._version:
            return  # the same values again: no new pattern
        self._seen[id(tensor)] = (weakref.ref(tensor), tensor._version)
        codes = self.codes(tensor).to(self.device)
        self.neurons += codes.shape[0]
        if codes.shape[0] == 0:
            return
        if self.batch_size <= _TABLE_BITS:
            if self._table is None:
                self._table = torch.zeros(1 << self.batch_size, dtype=torch.bool, device=self.device)
            self._table[codes] = True
        else:
            self._codes.append(torch.unique(codes, dim=0 if codes.dim() == 2 else None))

    def count(self) -> int:
        """The number of distinct patterns over every neuron added."""
        self._seen.clear()
        if self._table is not None:
            return int(self._table.sum())
        if not self._codes:
            return 0
        codes = torch.cat(self._codes)
        self._codes = [torch.unique(codes, dim=0 if codes.dim() == 2 else None)]
        return int(self._codes[0].shape[0])


def swap_from_activations(activations: torch.Tensor | Iterable[torch.Tensor], batch_size: int | None = None) -> float:
    """SWAP of activations already computed: the number of distinct sample-wise patterns.

    Args:
        activations: one tensor or an iterable of tensors, each (B, ...) with the batch first (the
            hooked activations of one forward pass; a (B, neurons) matrix works too). Element
            ``[b, ...] > 0`` is "neuron active for sample b".
        batch_size: B (default: the first dimension of the first tensor).

    Returns the count as a float (0.0 when there is no neuron). Equal to the official
    ``torch.unique(torch.sign(torch.cat([a.view(B, -1) ...], 1)).T, dim=0).size(0)`` for
    non-negative activations such as ReLU outputs.
    """
    if isinstance(activations, torch.Tensor):
        activations = [activations]
    patterns = None
    for tensor in activations:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"activations must be tensors, got {type(tensor).__name__}")
        if patterns is None:
            size = tensor.shape[0] if batch_size is None and tensor.dim() else batch_size
            if size is None:
                raise ValueError("a 0-d tensor has no batch dimension")
            patterns = ActivationPatterns(size, tensor.device)
        patterns.add(tensor)
    return float(patterns.count()) if patterns is not None else 0.0


def parameter_count_k(model: nn.Module) -> float:
    """The official ``count_parameters``: elements of every named parameter without 'auxiliary' in its name, / 1e3."""
    return sum(p.numel() for name, p in model.named_parameters() if "auxiliary" not in name) / 1e3


def swap_regular_factor(model: nn.Module, mu: float, sigma: float) -> float:
    """The official size regulariser ``exp(-(P_K - mu)**2 / sigma)``, ``P_K`` = :func:`parameter_count_k`."""
    for key, value in (("mu", mu), ("sigma", sigma)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"regular=True needs a finite number {key}, got {value!r}")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0 (the regulariser is exp(-(P_K - mu)**2 / sigma)), got {sigma!r}")
    return math.exp(-((parameter_count_k(model) - float(mu)) ** 2) / float(sigma))


def _gaussian_init_subtree(module: nn.Module) -> None:
    # the official network_weight_gaussian_init, applied with net.apply(): every module re-draws
    # its whole subtree, so the RNG order of the official protocol is kept
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            if m.weight is not None:
                nn.init.ones_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def gaussian_init_(model: nn.Module) -> nn.Module:
    """SWAP's ``correlation.py`` re-initialisation, in place: Conv2d/Linear weights N(0, 1), their biases
    0, BatchNorm2d/GroupNorm weights 1 and biases 0, drawn from the global RNG in the official order
    (``model.apply`` of a function that re-draws each module's whole subtree, so deep layers are
    drawn several times and keep their last draw)."""
    with torch.no_grad():
        model.apply(_gaussian_init_subtree)
    return model


@register_score("swap", needs_labels=False, data_dependent=True)
def swap_score(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor | None = None, *,
               regular: bool = False, mu: float | None = None, sigma: float | None = None,
               activations: ActivationSpec = None, init: Literal["gaussian"] | None = None,
               seed: int | None = None) -> float:
    """SWAP: the number of distinct sample-wise activation patterns (higher is better).

    Args:
        model: any network; scored in train mode (BatchNorm uses the batch statistics), one
            forward pass without gradients; left exactly as found.
        inputs: float tensor (B, ...) with B >= 2. The official protocol feeds 16 images
            (``x[:16]``); the score is at most ``2**B`` and depends on B and on the batch.
        targets: ignored (labels are not needed); may be None.
        regular: multiply by the official size regulariser ``exp(-(P_K - mu)**2 / sigma)``
            (``P_K``: parameters / 1e3, see :func:`parameter_count_k`); needs ``mu`` and ``sigma``
            (the official code has no defaults).
        mu, sigma: the regulariser's centre (in thousands of parameters) and width (> 0).
        activations: which modules are hooked. ``None`` (default): the official rule, every
            ``nn.ReLU`` whose input is 4-D; when none is (timm models with GELU/SiLU/Hardswish,
            MLPs), every activation module (``_hooks.ACTIVATION_NAMES``: ReLU, GELU, SiLU,
            Hardswish, ..., outermost only) on inputs of any shape with the batch first. Module
            classes or a predicate ``module -> bool``: exactly those modules, inputs of any shape.
        init: ``None`` (default): the weights as they are (the official ``SWAP.forward``).
            ``"gaussian"``: the official ``correlation.py`` re-initialisation first (Conv2d/Linear
            weights N(0, 1), biases 0, BatchNorm/GroupNorm 1/0; see :func:`gaussian_init_`), drawn
            from the global RNG (seed it just before the call), on the model's own parameters,
            which are restored afterwards. The official protocol averages 32 such draws: use
            ``Draws`` over initialisations, or call repeatedly with different seeds.
        seed: with ``init="gaussian"``, draw the re-initialisation from the global RNG seeded with
            ``seed`` (its state is restored afterwards); None: from the global RNG as it is.

    A neuron is active for a sample where the activation's *input* is > 0 (read by a forward
    pre-hook, so in-place activations are seen before they run); for ReLU this is the official
    ``sign(output)``. An NB201 cell of ``none`` ops scores 1.0 (every neuron is always off).
    Raises ``ValueError`` when no activation module runs (the official code returns None);
    functional activations such as ``F.relu`` cannot be hooked.
    """
    if init not in (None, "gaussian"):
        raise ValueError(f"init must be None (the weights as they are) or 'gaussian' (the official N(0, 1) "
                         f"re-initialisation), got {init!r}")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if init is None:
            raise ValueError("seed only applies with init='gaussian' (it seeds the re-initialisation)")
    if regular:
        if mu is None or sigma is None:
            raise ValueError("regular=True needs mu and sigma (the official code has no defaults): "
                             "swap * exp(-(P_K - mu)**2 / sigma) with P_K the parameter count in thousands")
        factor = swap_regular_factor(model, mu, sigma)
    elif mu is not None or sigma is not None:
        raise ValueError("mu and sigma only apply with regular=True")
    else:
        factor = 1.0

    inputs, _ = check_batch(inputs, None)
    device = model_device(model, inputs.device)
    inputs = prepare_inputs(model, inputs, device)
    batch = inputs.shape[0]

    if activations is None:
        modules = select_modules(model, lambda m: isinstance(m, nn.ReLU) or is_activation(m), outermost_only=False)
    else:
        predicate = activation_predicate(activations)
        modules = select_modules(model, predicate, outermost_only=True)
    relus = ActivationPatterns(batch, device)  # the official rule
    others = ActivationPatterns(batch, device)  # the fallback
    generic = {id(m) for _, m in select_modules(model, is_activation, outermost_only=True)}

    def make_hook(name):
        def hook(module, args):
            x = args[0] if args else None
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"swap: the input of activation {name!r} is not a tensor")
            if activations is None and isinstance(module, nn.ReLU) and x.dim() == 4:
                relus.add(x)
                return
            if activations is None and id(module) not in generic:
                return  # an nn.ReLU inside another activation module: only the official rule takes it
            if x.dim() < 2 or x.shape[0] != batch:
                raise ValueError(f"swap: the input of activation {name!r} has shape {tuple(x.shape)}; the "
                                 f"first dimension must be the batch ({batch})")
            others.add(x)
        return hook

    with scoring_context(model, device), restored_parameters(model) if init else contextlib.nullcontext():
        if init == "gaussian":
            if seed is not None:  # the RNG is forked by scoring_context and restored on exit
                torch.random.default_generator.manual_seed(int(seed))
                if device.type == "cuda":
                    with torch.cuda.device(device):
                        torch.cuda.manual_seed(int(seed))
            gaussian_init_(model)
        with hooks(modules, make_hook, pre=True), torch.no_grad():
            model(inputs)
    patterns = relus if relus.tensors else others
    if not patterns.tensors:
        raise ValueError(
            "swap found no activation to hook (looked for nn.ReLU with 4-D inputs, then "
            f"{', '.join(sorted(ACTIVATION_NAMES))}); functional activations such as F.relu cannot be "
            "hooked. Pass activations=(MyActivation,) or a predicate module -> bool."
        )
    return float(patterns.count()) * factor
