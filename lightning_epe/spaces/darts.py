"""The DARTS cell space (NAS-Bench-301's): a normal and a reduction cell of 4 nodes, 2 edges each, 7 ops.

A candidate is one string, ``"<normal>|<reduce>"``, each cell its 8 edges ``op~input`` joined by ``;``: edges 2k and
2k+1 feed intermediate node k+2 (k = 0..3); inputs 0 and 1 are the two previous cells' outputs, 2..5 the
intermediate nodes; the cell's output concatenates nodes 2..5. These are the shared file's ``normal`` and
``reduce`` columns joined by ``|``.
"""
from __future__ import annotations

import ast
import numbers
import random

import numpy as np
import torch
from torch import nn

from .base import CandidateSpace, sample_drawn

OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
       "dil_conv_5x5")  # NASLib's op order (its keys' op indices)
NODES = 4  # intermediate nodes per cell
EDGES = 2 * NODES
EXAMPLE = ("sep_conv_3x3~0;sep_conv_3x3~1;sep_conv_3x3~0;sep_conv_3x3~1;sep_conv_3x3~1;skip_connect~0;"
           "skip_connect~0;dil_conv_3x3~2|max_pool_3x3~0;max_pool_3x3~1;skip_connect~2;max_pool_3x3~1;"
           "max_pool_3x3~0;skip_connect~2;skip_connect~2;max_pool_3x3~1")  # DARTS (second order), DARTS_V2

Cell = tuple[tuple[str, int], ...]  # 8 (op, input) edges


# ------------------------------------------------------------------------------------------ genotypes
def _check_cell(edges, where: str) -> Cell:
    edges = tuple((op, int(source)) for op, source in edges)
    if len(edges) != EDGES:
        raise ValueError(f"DARTS {where} has {len(edges)} edges; a cell has {EDGES} (2 per node, nodes 2..5)")
    for k in range(NODES):
        (op_a, a), (op_b, b) = edges[2 * k], edges[2 * k + 1]
        for op, source in ((op_a, a), (op_b, b)):
            if op not in OPS:
                raise ValueError(f"DARTS {where}: unknown op {op!r} into node {k + 2}; ops are {', '.join(OPS)}")
            if not 0 <= source < k + 2:
                raise ValueError(f"DARTS {where}: node {k + 2} reads input {source}; it reads inputs 0..{k + 1}")
        if a == b:
            raise ValueError(f"DARTS {where}: node {k + 2} reads input {a} twice; its 2 inputs are distinct")
    return edges


def _parse_cell(text: str, where: str) -> Cell:
    edges = []
    for edge in text.strip().split(";"):
        op, sep, source = edge.strip().partition("~")
        if not sep or not source.strip().isdigit():
            raise ValueError(f"DARTS {where}: edge {edge!r} is not 'op~input' (e.g. 'sep_conv_3x3~0')")
        edges.append((op.strip(), int(source)))
    return _check_cell(edges, where)


def _format(normal: Cell, reduce: Cell) -> str:
    return "|".join(";".join(f"{op}~{source}" for op, source in cell) for cell in (normal, reduce))


def _split(candidate) -> tuple[Cell, Cell]:
    """A candidate string, a ``(normal, reduce)`` pair of strings or NASLib's key -> the two checked cells."""
    if isinstance(candidate, (tuple, list)) and len(candidate) == 2 and all(isinstance(c, str) for c in candidate):
        return _parse_cell(candidate[0], "normal cell"), _parse_cell(candidate[1], "reduction cell")
    if isinstance(candidate, str) and candidate.strip().startswith("["):
        try:
            cells = ast.literal_eval(candidate.strip())
            pairs = [[(int(s), int(o)) for s, o in cell] for cell in cells]
        except (ValueError, SyntaxError, TypeError):
            raise ValueError(f"NASLib DARTS key {candidate!r} is not two lists of (input, op index) pairs") from None
        if len(pairs) != 2 or not all(0 <= o < len(OPS) for cell in pairs for _, o in cell):
            raise ValueError(f"NASLib DARTS key {candidate!r} must hold 2 cells of (input, op index) pairs, op "
                             f"indices 0..{len(OPS) - 1} ({', '.join(OPS)})")
        return (_check_cell([(OPS[o], s) for s, o in pairs[0]], "normal cell"),
                _check_cell([(OPS[o], s) for s, o in pairs[1]], "reduction cell"))
    if isinstance(candidate, str) and candidate.count("|") == 1:
        return _split(tuple(candidate.split("|")))
    raise ValueError(f"a DARTS candidate must be '<normal>|<reduce>' with 8 'op~input' edges per cell joined by ';' "
                     f"(e.g. {EXAMPLE!r}), a (normal, reduce) pair of such strings or NASLib's key; got {candidate!r}")


# ------------------------------------------------------------------------------------------ operations
class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__(nn.ReLU(), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):
    def __init__(self, c: int, kernel: int, stride: int, padding: int, dilation: int, affine: bool):
        super().__init__(nn.ReLU(), nn.Conv2d(c, c, kernel, stride, padding, dilation, groups=c, bias=False),
                         nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c, affine=affine))


class SepConv(nn.Sequential):
    """Two dilation-1 DilConvs, the first with the stride."""

    def __init__(self, c: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__(DilConv(c, kernel, stride, padding, 1, affine), DilConv(c, kernel, 1, padding, 1, affine))


class FactorizedReduce(nn.Module):
    """Halves the resolution: two stride-2 1x1 convolutions, the second shifted by one pixel, concatenated."""

    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        self.relu = nn.ReLU()
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(x[:, :, 1:, 1:])], dim=1))


def make_op(name: str, c: int, stride: int, affine: bool) -> nn.Module:
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)
    if name.startswith("sep_conv_"):
        kernel = int(name[-1])
        return SepConv(c, kernel, stride, kernel // 2, affine)
    kernel = int(name[-1])  # dil_conv_3x3 / dil_conv_5x5: dilation 2
    return DilConv(c, kernel, stride, kernel - 1, 2, affine)


# ------------------------------------------------------------------------------------------ network
class DARTSCell(nn.Module):
    def __init__(self, edges: Cell, c_prev_prev: int, c_prev: int, c: int, reduction: bool, reduction_prev: bool,
                 affine: bool):
        super().__init__()
        self.preprocess0 = (FactorizedReduce(c_prev_prev, c, True) if reduction_prev
                            else ReLUConvBN(c_prev_prev, c, 1, 1, 0, True))
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0, True)
        self.sources = [source for _, source in edges]
        self.ops = nn.ModuleList(make_op(op, c, 2 if reduction and source < 2 else 1, affine) for op, source in edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(NODES):
            a, b = 2 * k, 2 * k + 1
            states.append(self.ops[a](states[self.sources[a]]) + self.ops[b](states[self.sources[b]]))
        return torch.cat(states[2:], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary head, on the 8x8 maps after the second reduction."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False), nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128), nn.ReLU(), nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU())
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class DARTSNetwork(nn.Module):
    """DARTS's CIFAR network: a 3x3 conv-BN stem of ``3 * C`` channels, ``layers`` cells with reduction cells
    (doubling the channels) at ``layers // 3`` and ``2 * layers // 3``, global average pooling, a linear classifier.

    ``forward`` returns the logits; with an auxiliary head, in training mode ``{"logits", "logits_aux"}``.
    """

    def __init__(self, normal: Cell, reduce: Cell, num_classes: int = 10, C: int = 32, layers: int = 8,
                 auxiliary: bool = False, affine: bool = False, in_channels: int = 3):
        super().__init__()
        self.reductions = (layers // 3, 2 * layers // 3)
        c_curr = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev_prev, c_prev, c_curr = c_curr, c_curr, C
        self.cells, reduction_prev, c_aux = nn.ModuleList(), False, None
        for i in range(layers):
            reduction = i in self.reductions
            if reduction:
                c_curr *= 2
            self.cells.append(DARTSCell(reduce if reduction else normal, c_prev_prev, c_prev, c_curr, reduction,
                                        reduction_prev, affine))
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, NODES * c_curr
            if i == self.reductions[1]:
                c_aux = c_prev
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes) if auxiliary else None
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor):
        s0 = s1 = self.stem(x)
        logits_aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i == self.reductions[1] and self.auxiliary_head is not None and self.training:
                logits_aux = self.auxiliary_head(s1)
        logits = self.classifier(s1.mean(dim=(2, 3)))
        return logits if logits_aux is None else {"logits": logits, "logits_aux": logits_aux}

    def extract_cell_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each cell's output: the features AZ-NAS reads. Unlike NB201's ``TinyNetwork`` not the stem's: a 3x3
        conv-BN of 3 input channels spans at most 27 of its 96 channels, and the official float32 covariance
        entropy of such a feature is NaN (negative eigenvalues), for every genotype."""
        s0 = s1 = self.stem(x)
        features = []
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1)
            features.append(s1)
        return features


# ------------------------------------------------------------------------------------------ the space
class DARTSSpace(CandidateSpace):
    """The DARTS / NAS-Bench-301 space: genotypes of a normal and a reduction cell (about 10^18; sampled).

    A candidate is ``"<normal>|<reduce>"`` (see the module docstring); ``parse`` also takes NASLib's key and a
    ``(normal, reduce)`` pair. ``build`` defaults to the network whose parameter count NAS-Bench-301's (NASLib's)
    figures give: 32 initial channels, 8 cells, no auxiliary head, BatchNorm without affine parameters inside the
    operations. DARTS's evaluation network: ``C=36, layers=20, auxiliary=True, affine=True``.
    """

    name = "darts"

    def __repr__(self) -> str:
        return "DARTSSpace()"

    def parse(self, candidate) -> str:
        return _format(*_split(candidate))

    def describe(self, candidate) -> str:
        return self.parse(candidate)

    def canonical(self, candidate) -> str:
        """The genotype with each node's two edges in (input, op) order: the same network (a sum is symmetric)."""
        def ordered(cell: Cell) -> Cell:
            return tuple(e for k in range(NODES) for e in sorted(cell[2 * k:2 * k + 2], key=lambda e: (e[1], e[0])))

        return _format(*(ordered(cell) for cell in _split(candidate)))

    def naslib_key(self, candidate) -> str:
        """NASLib's key: ``[[(input, op index), ...] normal, [...] reduce]``."""
        return str([[(source, OPS.index(op)) for op, source in cell] for cell in _split(candidate)])

    @staticmethod
    def _sample_cell(rng: np.random.Generator) -> Cell:
        edges = []
        for k in range(NODES):
            for source in rng.choice(k + 2, size=2, replace=False):
                edges.append((OPS[int(rng.integers(len(OPS)))], int(source)))
        return tuple(edges)

    def sample(self, n: int, seed: int | None = None, replace: bool = True) -> list[str]:
        """``n`` genotypes as NAS-Bench-301 samples them: per node 2 distinct inputs and 2 ops uniformly at
        random. ``replace=False``: no two build the same network (compared by :meth:`canonical`)."""
        return sample_drawn(n, seed, replace, lambda rng: _format(self._sample_cell(rng), self._sample_cell(rng)),
                            self.canonical)

    def mutate(self, candidate, rng: random.Random) -> str:
        """A neighbour for evolution (NASLib's DARTS mutation): in one of the two cells, one edge gets another op
        or another input (distinct from its node's other input); always another network."""
        cells = [list(cell) for cell in _split(candidate)]
        before = self.canonical(candidate)
        for _ in range(1000):
            cell = rng.randrange(2)
            edge = rng.randrange(EDGES)
            op, source = cells[cell][edge]
            sibling = cells[cell][edge ^ 1][1]
            new = [row[:] for row in cells]
            if rng.random() < 0.5:
                new[cell][edge] = (rng.choice([o for o in OPS if o != op]), source)
            else:
                choices = [s for s in range(edge // 2 + 2) if s not in (source, sibling)]
                if not choices:
                    continue
                new[cell][edge] = (op, rng.choice(choices))
            text = _format(tuple(new[0]), tuple(new[1]))
            if self.canonical(text) != before:
                return text
        raise RuntimeError(f"no mutation of DARTS genotype {candidate!r} found in 1000 tries")

    def build(self, candidate, num_classes: int = 10, C: int = 32, layers: int = 8, auxiliary: bool = False,
              affine: bool = False, in_channels: int = 3) -> nn.Module:
        """DARTS's CIFAR network of a genotype; NAS-Bench-301's size by default."""
        for label, value in (("num_classes", num_classes), ("C", C), ("layers", layers), ("in_channels", in_channels)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        if layers < 3:
            raise ValueError(f"layers must be at least 3 (two of them are reduction cells), got {layers}")
        for label, value in (("auxiliary", auxiliary), ("affine", affine)):
            if not isinstance(value, bool):
                raise ValueError(f"{label} must be true or false, got {value!r}")
        normal, reduce = _split(candidate)
        return DARTSNetwork(normal, reduce, int(num_classes), int(C), int(layers), auxiliary, affine, int(in_channels))
