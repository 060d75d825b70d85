"""NAS-Bench-201 building blocks, module for module as AutoDL / xautodl's ``TinyNetwork``.

Module names, construction order and forward arithmetic match the original so that its
state dicts load with ``strict=True`` and the same seed gives the same initial weights.
"""
from __future__ import annotations

import torch
from torch import nn


class ReLUConvBN(nn.Module):
    """ReLU -> Conv (no bias) -> BN; the attribute ``op`` gives AutoDL's key names."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=True, track_running_stats=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` op: multiplies by zero (so NaN/inf propagate as in the original)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


class AvgPool(nn.Module):
    """The ``avg_pool_3x3`` op (AutoDL's ``POOLING`` with C_in == C_out: no preprocess)."""

    def __init__(self):
        super().__init__()
        self.op = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


def make_op(name: str, channels: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1, 1, 0)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3, 1, 1)
    if name == "avg_pool_3x3":
        return AvgPool()
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


class InferCell(nn.Module):
    """One searched cell: node i is the sum of one op applied to each earlier node."""

    def __init__(self, nodes: tuple[tuple[str, ...], ...], channels: int):
        super().__init__()
        self.layers = nn.ModuleList()
        self.node_inputs: list[list[tuple[int, int]]] = []  # per node: (layer index, input node)
        for node_ops in nodes:
            wiring = []
            for source, op_name in enumerate(node_ops):
                wiring.append((len(self.layers), source))
                self.layers.append(make_op(op_name, channels))
            self.node_inputs.append(wiring)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for wiring in self.node_inputs:
            # Python's sum (0 + a + b ...) in edge order, exactly as AutoDL adds them.
            nodes.append(sum(self.layers[layer](nodes[source]) for layer, source in wiring))
        return nodes[-1]


class ResNetBasicblock(nn.Module):
    """The fixed reduction block between stages (stride 2)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1)
        self.downsample = nn.Sequential(
            nn.AvgPool2d(kernel_size=2, stride=2, padding=0),
            nn.Conv2d(c_in, c_out, kernel_size=1, stride=1, padding=0, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        block = self.conv_b(self.conv_a(x))
        return self.downsample(x) + block


class TinyNetwork(nn.Module):
    """The NAS-Bench-201 macro skeleton; ``forward`` returns ``(features, logits)`` like AutoDL."""

    def __init__(self, nodes: tuple[tuple[str, ...], ...], C: int = 16, N: int = 5,
                 num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C)
        )
        self.widths = widths = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N  # per cell
        reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
        self.cells = nn.ModuleList()
        c_prev = C
        for width, reduction in zip(widths, reductions):
            self.cells.append(ResNetBasicblock(c_prev, width) if reduction else InferCell(nodes, width))
            c_prev = width
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.stem(x)
        for cell in self.cells:
            feature = cell(feature)
        out = self.global_pooling(self.lastact(feature))
        out = out.view(out.size(0), -1)
        return out, self.classifier(out)
