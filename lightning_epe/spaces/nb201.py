"""The NAS-Bench-201 cell space: 5 ops on 6 edges, 15,625 cells in the benchmark's own order."""
from __future__ import annotations

import numbers
import re
from functools import cached_property
from importlib import resources

import numpy as np
from torch import nn

from .base import Builder, CandidateSpace, sample_indices
from .nb201_builder import NB201Builder
from .nb201_ops import TinyNetwork

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NODES = 3  # searched nodes per cell; node i has one incoming edge from each earlier node
EDGES = NODES * (NODES + 1) // 2
SPACE_SIZE = len(OPS) ** EDGES
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
_ORDER_FILE = "nb201_order.npy"
_INDEX_TEXT = re.compile(r"[+-]?\d+")  # an index given as text: '9930', '-1' (out of range), not '--5'


def parse_arch(arch: str) -> tuple[tuple[str, ...], ...]:
    """Parse and validate an arch string into per-node op tuples (op of input 0, 1, ...).

    Raises ``ValueError`` naming the problem and what is accepted.
    """
    if not isinstance(arch, str):
        raise ValueError(f"an NB201 arch must be a string like {EXAMPLE!r}, got {type(arch).__name__}")
    text = arch.strip()
    node_texts = text.split("+")
    if len(node_texts) != NODES:
        raise ValueError(
            f"NB201 arch {arch!r} has {len(node_texts)} node(s) separated by '+'; expected {NODES}, "
            f"e.g. {EXAMPLE!r}"
        )
    nodes = []
    for node, node_text in enumerate(node_texts, start=1):
        if not (node_text.startswith("|") and node_text.endswith("|") and len(node_text) > 1):
            raise ValueError(
                f"NB201 arch {arch!r}: node {node} {node_text!r} must be written '|op~input|...|' "
                f"between '|' characters, e.g. {EXAMPLE!r}"
            )
        edges = node_text[1:-1].split("|")
        if len(edges) != node:
            raise ValueError(
                f"NB201 arch {arch!r}: node {node} has {len(edges)} edge(s); node {node} takes exactly "
                f"{node} (one from each of nodes 0..{node - 1})"
            )
        ops = []
        for expected_source, edge in enumerate(edges):
            op, sep, source = edge.partition("~")
            if not sep:
                raise ValueError(f"NB201 arch {arch!r}: edge {edge!r} of node {node} is not 'op~input'")
            if op not in OPS:
                raise ValueError(
                    f"NB201 arch {arch!r}: unknown op {op!r} on edge {edge!r} of node {node}; "
                    f"valid ops: {', '.join(OPS)}"
                )
            if source != str(expected_source):
                raise ValueError(
                    f"NB201 arch {arch!r}: edge {edge!r} of node {node} reads input {source!r}; "
                    f"edge {expected_source + 1} of node {node} must read input {expected_source} "
                    f"(inputs are 0..{node - 1}, in order)"
                )
            ops.append(op)
        nodes.append(tuple(ops))
    return tuple(nodes)


def format_arch(nodes: tuple[tuple[str, ...], ...]) -> str:
    return "+".join("|" + "|".join(f"{op}~{j}" for j, op in enumerate(ops)) + "|" for ops in nodes)


def arch_code(nodes: tuple[tuple[str, ...], ...]) -> int:
    """Base-5 code of a cell: edges in string order, most significant first."""
    code = 0
    for ops in nodes:
        for op in ops:
            code = code * len(OPS) + OPS.index(op)
    return code


def code_arch(code: int) -> tuple[tuple[str, ...], ...]:
    digits = []
    for _ in range(EDGES):
        code, digit = divmod(code, len(OPS))
        digits.append(OPS[digit])
    digits.reverse()
    nodes, start = [], 0
    for node in range(1, NODES + 1):
        nodes.append(tuple(digits[start:start + node]))
        start += node
    return tuple(nodes)


class NB201Space(CandidateSpace):
    """All 15,625 NAS-Bench-201 cells, indexed in the benchmark's own order.

    A candidate is the benchmark index (an ``int``); ``arch(i)`` gives its arch string and
    ``index(arch)`` the way back. ``build`` returns AutoDL's ``TinyNetwork`` layout (same module
    names and construction order), whose forward returns ``(features, logits)``.
    """

    name = "nb201"

    @cached_property
    def _codes(self) -> np.ndarray:
        with resources.files(__package__).joinpath(_ORDER_FILE).open("rb") as f:
            codes = np.load(f, allow_pickle=False)
        if codes.shape != (SPACE_SIZE,):
            raise RuntimeError(f"corrupt {_ORDER_FILE}: shape {codes.shape}, expected ({SPACE_SIZE},)")
        return codes.astype(np.int64)

    @cached_property
    def _index_of_code(self) -> np.ndarray:
        lookup = np.empty(SPACE_SIZE, dtype=np.int64)
        lookup[self._codes] = np.arange(SPACE_SIZE)
        return lookup

    def __len__(self) -> int:
        return SPACE_SIZE

    def __repr__(self) -> str:
        return f"NB201Space({SPACE_SIZE} cells)"

    def _check_index(self, index) -> int:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise ValueError(f"an NB201 index must be an int in 0..{SPACE_SIZE - 1}, got {index!r}")
        if not 0 <= index < SPACE_SIZE:
            raise ValueError(f"NB201 index {index} is out of range; valid indices are 0..{SPACE_SIZE - 1}")
        return int(index)

    def arch(self, index: int) -> str:
        """The arch string of benchmark index ``index``."""
        return format_arch(code_arch(int(self._codes[self._check_index(index)])))

    def index(self, arch: str) -> int:
        """The benchmark index of an arch string (validated)."""
        return int(self._index_of_code[arch_code(parse_arch(arch))])

    def parse(self, candidate: str | int) -> int:
        """A candidate given as an index (an int, numpy integers too), a numeric string or an arch string ->
        its index. Anything else raises a ``ValueError`` saying what an index and an arch string look like."""
        if isinstance(candidate, str):
            text = candidate.strip()
            if _INDEX_TEXT.fullmatch(text):
                return self._check_index(int(text))
            if "|" not in text and "~" not in text:
                raise ValueError(f"NB201 candidate {candidate!r} is neither an index (an int in 0..{SPACE_SIZE - 1}, "
                                 f"e.g. '9930') nor an arch string (e.g. {EXAMPLE!r})")
            return self.index(text)
        return self._check_index(candidate)

    def describe(self, candidate: int) -> str:
        return self.arch(candidate)

    def sample(self, n: int, seed: int | None = None, replace: bool = True) -> list[int]:
        """``n`` indices drawn uniformly (with replacement by default, as the paper's random search)."""
        return list(sample_indices(SPACE_SIZE, n, seed, replace))

    def mutate(self, candidate: int, rng) -> int:
        """A neighbour for evolution: one random edge gets a different op (``rng``: random.Random)."""
        ops = [op for node in code_arch(int(self._codes[self.parse(candidate)])) for op in node]
        edge = rng.randrange(EDGES)
        ops[edge] = rng.choice([op for op in OPS if op != ops[edge]])
        code = 0
        for op in ops:
            code = code * len(OPS) + OPS.index(op)
        return int(self._index_of_code[code])

    def __iter__(self):
        return iter(range(SPACE_SIZE))

    def ops(self, arch_or_index: str | int) -> tuple[str, ...]:
        """The op of each of the 6 edges, in arch-string order."""
        return tuple(op for node in code_arch(int(self._codes[self.parse(arch_or_index)])) for op in node)

    @staticmethod
    def check_sizes(**sizes) -> dict[str, int]:
        """``num_classes``, ``C``, ``N``, ``in_channels`` as ints (numpy integers accepted); a ``ValueError``
        names one that is not a positive int."""
        for label, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        return {label: int(value) for label, value in sizes.items()}

    def build(self, arch_or_index: str | int, num_classes: int = 10, C: int = 16, N: int = 5,
              in_channels: int = 3) -> nn.Module:
        """The NB201 network of a cell, with AutoDL ``TinyNetwork``'s module names and init order."""
        nodes = code_arch(int(self._codes[self.parse(arch_or_index)]))
        return TinyNetwork(nodes, **self.check_sizes(num_classes=num_classes, C=C, N=N, in_channels=in_channels))

    def builder(self, device="cpu", num_classes: int = 10, **options) -> Builder:
        """A builder that rewires and re-initialises one network per candidate: the networks of
        ``build`` bit for bit, several times faster (:class:`~lightning_epe.spaces.nb201_builder.NB201Builder`).
        A subclass with a ``build`` of its own, or options ``build`` refuses, get the plain builder (``build``
        for every candidate)."""
        if type(self).build is NB201Space.build:
            try:
                return NB201Builder(self, device, num_classes, **options)
            except (TypeError, ValueError):
                pass  # bad options: every candidate fails with build's own error, recorded as a search records it
        return super().builder(device, num_classes, **options)
