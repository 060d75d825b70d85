"""The NAS-Bench-101 cell space: DAGs of at most 7 vertices and 9 edges, 3 vertex ops, and NB101's network.

A candidate is one string, ``"<matrix>|<ops>"``: the n x n upper-triangular adjacency matrix row-major as n*n
characters ``0``/``1`` (``matrix[i*n+j] == '1'``: an edge from vertex i to vertex j), then the n vertex labels,
comma-separated (first ``input``, last ``output``); n = 7 for the cells the space samples. This is the shared
file's ``matrix`` and ``ops`` columns joined by ``|``.
"""
from __future__ import annotations

import ast
import itertools
import numbers
import random

import numpy as np
import torch
from torch import nn

from .base import CandidateSpace, sample_drawn

INPUT, OUTPUT = "input", "output"
OPS = ("conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3")  # the labels of interior vertices
NASLIB_OPS = (INPUT, OUTPUT, "maxpool3x3", "conv1x1-bn-relu", "conv3x3-bn-relu")  # NASLib's op codes
MAX_VERTICES, MAX_EDGES = 7, 9
UNIQUE_CELLS = 423_624  # NAS-Bench-101's count of distinct networks
EXAMPLE = "0111101000001100000010000110000001100000000000000|" \
          "input,maxpool3x3,maxpool3x3,conv3x3-bn-relu,conv3x3-bn-relu,conv3x3-bn-relu,output"


# ------------------------------------------------------------------------------------------ cells
def _format(matrix: np.ndarray, ops: tuple[str, ...]) -> str:
    return "".join("1" if v else "0" for v in matrix.reshape(-1)) + "|" + ",".join(ops)


def _split(candidate, shown=None) -> tuple[np.ndarray, tuple[str, ...]]:
    """A candidate string, a ``(matrix, ops)`` pair or NASLib's key -> (n x n int matrix, ops), checked to be a
    well-formed cell (shape, labels, upper triangular); whether it is a valid NB101 cell is :func:`validity`'s.
    ``shown``: the candidate as the user gave it, for error messages."""
    shown = candidate if shown is None else shown
    if isinstance(candidate, (tuple, list)) and len(candidate) == 2:
        matrix, ops = candidate
        ops = tuple(ops.split(",")) if isinstance(ops, str) else tuple(ops)
        if isinstance(matrix, str):
            matrix = [int(c) for c in matrix.strip()] if set(matrix.strip()) <= {"0", "1"} else None
        matrix = np.asarray(matrix) if matrix is not None else None
    elif isinstance(candidate, str) and candidate.strip().startswith("("):
        return _split(_from_naslib(candidate), candidate)
    elif isinstance(candidate, str) and candidate.count("|") == 1:
        bits, ops_text = candidate.strip().split("|")
        return _split((bits, ops_text), candidate)
    else:
        raise ValueError(f"an NB101 candidate must be '<matrix>|<ops>' (e.g. {EXAMPLE!r}), a (matrix, ops) pair "
                         f"or NASLib's key (49 entries and 7 op codes in parentheses); got {candidate!r}")
    n = len(ops)
    if matrix is None or matrix.size != n * n or not np.isin(matrix, (0, 1)).all():
        raise ValueError(f"NB101 cell {shown!r}: the matrix must be {n}x{n} entries 0/1 for {n} ops "
                         f"(row-major, e.g. 49 characters for 7 vertices)")
    matrix = matrix.reshape(n, n).astype(np.int64)
    if not 2 <= n <= MAX_VERTICES:
        raise ValueError(f"NB101 cell {shown!r} has {n} vertices; a cell has 2..{MAX_VERTICES}")
    if ops[0] != INPUT or ops[-1] != OUTPUT:
        raise ValueError(f"NB101 cell {shown!r}: the first op must be {INPUT!r} and the last {OUTPUT!r}")
    bad = [op for op in ops[1:-1] if op not in OPS]
    if bad:
        raise ValueError(f"NB101 cell {shown!r}: unknown op(s) {bad}; interior ops are {', '.join(OPS)}")
    if np.tril(matrix).any():
        raise ValueError(f"NB101 cell {shown!r}: the matrix must be strictly upper triangular "
                         f"(edges go from a vertex to a later one)")
    return matrix, tuple(ops)


def _from_naslib(key: str) -> tuple[np.ndarray, tuple[str, ...]]:
    try:
        values = ast.literal_eval(key.strip())
        codes = [int(v) for v in values]
    except (ValueError, SyntaxError, TypeError):
        raise ValueError(f"NASLib NB101 key {key!r} is not a tuple of ints") from None
    if len(codes) != MAX_VERTICES * MAX_VERTICES + MAX_VERTICES or not all(0 <= c < len(NASLIB_OPS)
                                                                           for c in codes[49:]):
        raise ValueError(f"NASLib NB101 key {key!r} must hold 49 matrix entries and 7 op codes in "
                         f"0..{len(NASLIB_OPS) - 1} ({', '.join(NASLIB_OPS)})")
    return np.asarray(codes[:49]), tuple(NASLIB_OPS[c] for c in codes[49:])


def prune(matrix: np.ndarray, ops: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...]] | None:
    """NB101's pruning: drop the vertices not on an input -> output path; None when no such path exists."""
    n = len(ops)
    forward, backward = {0}, {n - 1}
    for v in range(1, n):  # vertices in topological order: an edge always goes to a later vertex
        if any(matrix[u, v] for u in forward):
            forward.add(v)
    for v in range(n - 2, -1, -1):
        if any(matrix[v, w] for w in backward):
            backward.add(v)
    keep = sorted(forward & backward)
    if n - 1 not in forward:
        return None
    return matrix[np.ix_(keep, keep)], tuple(ops[v] for v in keep)


def validity(candidate) -> str | None:
    """None for a valid NB101 cell, else the reason (after pruning: input reaches output, <= 7 vertices,
    <= 9 edges, as NB101's ``is_valid``)."""
    matrix, ops = _split(candidate)
    pruned = prune(matrix, ops)
    if pruned is None:
        return "no path from input to output"
    if pruned[0].sum() > MAX_EDGES:
        return f"{int(pruned[0].sum())} edges after pruning; at most {MAX_EDGES}"
    return None


def canonical_form(candidate) -> str:
    """The same network's one representative: the pruned cell, its interior vertices renumbered to the
    smallest (matrix, ops) string over every topological order. Two cells give the same form exactly when
    their pruned graphs are isomorphic with the same labels (an exact test: at most 5! orders)."""
    matrix, ops = _split(candidate)
    pruned = prune(matrix, ops)
    if pruned is None:
        raise ValueError(f"NB101 cell {candidate!r} is not valid: no path from input to output")
    matrix, ops = pruned
    n = len(ops)
    best = None
    for order in itertools.permutations(range(1, n - 1)):
        perm = (0, *order, n - 1)
        m = matrix[np.ix_(perm, perm)]
        if np.tril(m).any():
            continue  # not a topological order
        text = _format(m, tuple(ops[v] for v in perm))
        best = text if best is None or text < best else best
    return best


# ------------------------------------------------------------------------------------------ network
class ConvBnRelu(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU())


def vertex_channels(c_in: int, c_out: int, matrix: np.ndarray) -> list[int]:
    """NB101's channel rule: the output's channels split as evenly as possible among the vertices feeding
    it (the first ones take the remainder); every other interior vertex gets the most of its successors."""
    n = len(matrix)
    channels = [0] * n
    channels[0], channels[-1] = c_in, c_out
    if n == 2:
        return channels
    fan_in = int(matrix[1:, n - 1].sum())
    share, extra = divmod(c_out, fan_in)
    for v in range(1, n - 1):
        if matrix[v, n - 1]:
            channels[v] = share + (1 if extra > 0 else 0)
            extra -= 1
    for v in range(n - 3, 0, -1):
        if not matrix[v, n - 1]:
            channels[v] = max(channels[w] for w in range(v + 1, n - 1) if matrix[v, w])
    return channels


class Cell(nn.Module):
    """An NB101 cell (pruned): vertex inputs are sums of earlier vertices cut to the vertex's channels and of a
    1x1 projection of the cell input; the output concatenates the vertices feeding it, plus a projection of
    the input when the input feeds the output directly."""

    def __init__(self, matrix: np.ndarray, ops: tuple[str, ...], c_in: int, c_out: int):
        super().__init__()
        self.matrix, n = matrix, len(ops)
        self.channels = vertex_channels(c_in, c_out, matrix)
        self.ops = nn.ModuleList([nn.Identity()])
        self.projections = nn.ModuleList([nn.Identity()])
        for v in range(1, n - 1):
            c = self.channels[v]
            self.projections.append(ConvBnRelu(c_in, c, 1) if matrix[0, v] else nn.Identity())
            self.ops.append(ConvBnRelu(c, c, 3) if ops[v] == "conv3x3-bn-relu" else
                            ConvBnRelu(c, c, 1) if ops[v] == "conv1x1-bn-relu" else
                            nn.MaxPool2d(3, stride=1, padding=1))
        self.output_projection = ConvBnRelu(c_in, c_out, 1) if matrix[0, n - 1] else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, matrix = len(self.channels), self.matrix
        states = [x]
        for v in range(1, n - 1):
            terms = [states[u][:, :self.channels[v]] for u in range(1, v) if matrix[u, v]]
            if matrix[0, v]:
                terms.append(self.projections[v](x))
            states.append(self.ops[v](sum(terms[1:], terms[0])))
        feeding = [states[v] for v in range(1, n - 1) if matrix[v, n - 1]]
        out = torch.cat(feeding, dim=1) if feeding else None
        if self.output_projection is not None:
            out = self.output_projection(x) if out is None else out + self.output_projection(x)
        return out


class NB101Network(nn.Module):
    """NB101's network: a 3x3 conv-BN-ReLU stem, ``stacks`` stacks of ``cells_per_stack`` cells with a 2x2
    max-pool halving the resolution and the cells doubling the channels after it, global average pooling,
    a linear classifier. ``forward`` returns the logits."""

    def __init__(self, matrix: np.ndarray, ops: tuple[str, ...], num_classes: int = 10, stem_channels: int = 128,
                 stacks: int = 3, cells_per_stack: int = 3, in_channels: int = 3):
        super().__init__()
        self.stem = ConvBnRelu(in_channels, stem_channels, 3)
        layers, c_in, c_out = [], stem_channels, stem_channels
        for stack in range(stacks):
            if stack > 0:
                layers.append(nn.MaxPool2d(2, stride=2))
                c_out *= 2
            for _ in range(cells_per_stack):
                layers.append(Cell(matrix, ops, c_in, c_out))
                c_in = c_out
        self.cells = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_out, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.cells(self.stem(x)).mean(dim=(2, 3)))

    def extract_cell_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem's output and each cell's (the features AZ-NAS reads, as from NB201's ``TinyNetwork``)."""
        features = [self.stem(x)]
        feature = features[0]
        for layer in self.cells:
            feature = layer(feature)
            if isinstance(layer, Cell):
                features.append(feature)
        return features


# ------------------------------------------------------------------------------------------ the space
class NB101Space(CandidateSpace):
    """The NAS-Bench-101 space (423,624 unique cells; not enumerated here: sample or search by evolution).

    A candidate is ``"<matrix>|<ops>"`` (see the module docstring); ``parse`` also takes NASLib's key and a
    ``(matrix, ops)`` pair. ``canonical(c)`` is the one representative of the network ``c`` builds (isomorphic
    and pruned-away differences removed); ``sample(replace=False)`` never returns two of the same network.
    ``build`` makes NB101's network (stem 128, 3 stacks of 3 cells); ``stem_channels``, ``stacks`` and
    ``cells_per_stack`` make it smaller.
    """

    name = "nb101"

    def __repr__(self) -> str:
        return "NB101Space()"

    def parse(self, candidate) -> str:
        """A candidate string, NASLib's key or a ``(matrix, ops)`` pair -> the candidate string (validated)."""
        matrix, ops = _split(candidate)
        reason = validity((matrix, ops))
        if reason:
            raise ValueError(f"NB101 cell {candidate!r} is not valid: {reason}")
        return _format(matrix, ops)

    def describe(self, candidate) -> str:
        return self.parse(candidate)

    def canonical(self, candidate) -> str:
        return canonical_form(self.parse(candidate))

    def naslib_key(self, candidate) -> str:
        """NASLib's key of a 7-vertex cell: the 49 matrix entries and 7 op codes as a tuple."""
        matrix, ops = _split(self.parse(candidate))
        if len(ops) != MAX_VERTICES:
            raise ValueError(f"NASLib keys hold 7-vertex cells; {candidate!r} has {len(ops)}")
        return str(tuple(int(v) for v in matrix.reshape(-1)) + tuple(NASLIB_OPS.index(op) for op in ops))

    def sample(self, n: int, seed: int | None = None, replace: bool = True) -> list[str]:
        """``n`` valid 7-vertex cells as NB101's random search draws them: every upper-triangular edge and every
        interior op uniformly at random, drawn again until valid. ``replace=False``: no two build the same
        network (compared by :meth:`canonical`)."""
        if not replace and n > UNIQUE_CELLS:
            raise ValueError(f"cannot draw {n} distinct NB101 networks: the space has {UNIQUE_CELLS:,}")
        upper = np.triu(np.ones((MAX_VERTICES, MAX_VERTICES), dtype=bool), 1)

        def draw(rng):
            matrix = (rng.integers(0, 2, (MAX_VERTICES, MAX_VERTICES)) * upper).astype(np.int64)
            ops = (INPUT, *(OPS[i] for i in rng.integers(0, len(OPS), MAX_VERTICES - 2)), OUTPUT)
            return None if validity((matrix, ops)) else _format(matrix, ops)

        return sample_drawn(n, seed, replace, draw, canonical_form)

    def mutate(self, candidate, rng: random.Random) -> str:
        """A neighbour for evolution: one interior op changed or one edge flipped, valid and another network
        (a cell of fewer than 7 vertices is first padded to 7 with unconnected vertices)."""
        matrix, ops = _split(self.parse(candidate))
        n = len(ops)
        if n < MAX_VERTICES:  # unconnected vertices before the output: pruned, the same network
            pad = MAX_VERTICES - n
            full = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.int64)
            keep = [*range(n - 1), MAX_VERTICES - 1]
            full[np.ix_(keep, keep)] = matrix
            matrix, ops = full, (*ops[:-1], *[OPS[0]] * pad, OUTPUT)
        before = canonical_form((matrix, ops))
        edges = [(i, j) for i in range(MAX_VERTICES) for j in range(i + 1, MAX_VERTICES)]
        for _ in range(1000):
            m, o = matrix.copy(), list(ops)
            if rng.random() < 0.5:
                v = rng.randrange(1, MAX_VERTICES - 1)
                o[v] = rng.choice([op for op in OPS if op != o[v]])
            else:
                i, j = rng.choice(edges)
                m[i, j] = 1 - m[i, j]
            if validity((m, tuple(o))) is None and canonical_form((m, tuple(o))) != before:
                return _format(m, tuple(o))
        raise RuntimeError(f"no valid mutation of NB101 cell {candidate!r} found in 1000 tries")

    @staticmethod
    def _check_sizes(**sizes) -> dict[str, int]:
        for label, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        return {label: int(value) for label, value in sizes.items()}

    def build(self, candidate, num_classes: int = 10, stem_channels: int = 128, stacks: int = 3,
              cells_per_stack: int = 3, in_channels: int = 3) -> nn.Module:
        """NB101's network of a cell (pruned first); NB101's size by default."""
        matrix, ops = prune(*_split(self.parse(candidate)))
        return NB101Network(matrix, ops, **self._check_sizes(
            num_classes=num_classes, stem_channels=stem_channels, stacks=stacks, cells_per_stack=cells_per_stack,
            in_channels=in_channels))
