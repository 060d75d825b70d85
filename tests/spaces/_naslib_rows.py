"""What the NB101 and DARTS space tests share: the shared files' rows and a FLOP count by layer."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch import nn

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def naslib_rows(name: str) -> list[dict]:
    """The rows of ``nb101/nb101_cifar10_naslib.csv`` or ``nb301/nb301_cifar10_naslib.csv``; skips when absent."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"the shared data ({path}) is not here")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def layer_flops(net: nn.Module, size: int = 32) -> dict[str, int]:
    """Counts of one 3 x size x size sample's forward, by kind: multiply-adds of convolutions and linear layers,
    output elements of BatchNorm (affine or not), ReLU, and pooling (times the kernel's area). On the meta device."""
    counts = dict.fromkeys(("macs", "bn_affine", "bn_plain", "relu", "pool", "pool_area"), 0)

    def hook(module, args, out):
        n = out.numel()
        if isinstance(module, nn.Conv2d):
            counts["macs"] += n * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            counts["macs"] += n * module.in_features
        elif isinstance(module, nn.BatchNorm2d):
            counts["bn_affine" if module.affine else "bn_plain"] += n
        elif isinstance(module, nn.ReLU):
            counts["relu"] += n
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            k = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
            counts["pool"] += n
            counts["pool_area"] += n * k * k

    handles = [m.register_forward_hook(hook) for m in net.modules() if not list(m.children())]
    try:
        net(torch.zeros(1, 3, size, size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    return counts


def param_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
