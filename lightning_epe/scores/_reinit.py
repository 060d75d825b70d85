"""Re-initialisations that official proxy code applies before scoring, and a way to undo them.

AZ-NAS and VKDNW always run ``init_model(model, 'kaiming_norm_fanin')``: Conv2d/Linear weights
Kaiming normal (fan-in, ReLU gain), biases 0, affine BatchNorm2d/GroupNorm weights 1 and biases 0,
drawn from the global RNG in the order ``nn.Module.apply`` visits the modules. The draws here are
made in that order, so a seeded RNG gives the official weights.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn


def apply_order(module: nn.Module) -> Iterator[nn.Module]:
    """Modules in the order ``nn.Module.apply`` visits them (children first; shared modules again)."""
    for child in module.children():
        yield from apply_order(child)
    yield module


def kaiming_fanin_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """New parameter tensors as the official Kaiming fan-in re-initialisation would leave them.

    Returned by parameter name (tied names share one tensor), e.g. for ``torch.func.functional_call``;
    ``model`` is not touched.
    """
    new: dict[int, torch.Tensor] = {}

    def param(module, name):
        value = module._parameters.get(name)
        return value if isinstance(value, torch.Tensor) else None

    with torch.no_grad():
        for m in apply_order(model):
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                weight, bias = param(m, "weight"), param(m, "bias")
                if weight is not None:
                    new[id(weight)] = nn.init.kaiming_normal_(torch.empty_like(weight), mode="fan_in",
                                                              nonlinearity="relu")
                if bias is not None:
                    new[id(bias)] = torch.zeros_like(bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.affine:
                weight, bias = param(m, "weight"), param(m, "bias")
                if weight is not None:
                    new[id(weight)] = torch.ones_like(weight)
                if bias is not None:
                    new[id(bias)] = torch.zeros_like(bias)
    return {name: new[id(p)] for name, p in model.named_parameters(remove_duplicate=False) if id(p) in new}


def kaiming_fanin_init_(model: nn.Module) -> nn.Module:
    """The official Kaiming fan-in re-initialisation, in place (the same draws as :func:`kaiming_fanin_tensors`)."""
    tensors = kaiming_fanin_tensors(model)
    with torch.no_grad():
        for name, p in model.named_parameters(remove_duplicate=False):
            if name in tensors:
                p.copy_(tensors[name])
    return model


@contextlib.contextmanager
def restored_parameters(model: nn.Module) -> Iterator[None]:
    """Every parameter's value is put back on exit (for temporary re-initialisations in place)."""
    saved = [(p, p.detach().clone()) for p in model.parameters()]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, value in saved:
                p.copy_(value)
