"""NB201 networks for a search, fast: one network rewired and re-initialised for each candidate.

Constructing an NB201 network (C=16, N=5) makes ~330 modules: ~15-25 ms of Python on a CPU, most of
a search's time once the score runs on a GPU. :class:`NB201Builder` constructs the macro skeleton
once, and one module per (cell, edge, op) the first time a candidate needs it. For a candidate it
puts each edge's op module in place, draws every weight again in the order a fresh
``TinyNetwork`` draws them (stem, cells in order, edges in order, classifier), from a generator
seeded with the candidate's seed, and resets every BatchNorm to its initial state. The network is
then bit for bit the one of ``torch.manual_seed(seed); space.build(candidate)`` (tested on samples
of cells, ``tests/spaces/test_nb201_builder.py``), and the global RNG is left alone.

The network handed out belongs to the builder: it is valid until the next ``build``. A score may
change its values, modes and gradients (they are reset); one that leaves hooks on it, replaces its
modules, parameters or buffers, or moves it (``.to``, ``.half()``) is noticed at the next ``build``,
and the builder starts over with a new network (as slow as a plain build, once); so does a change of
``torch.get_default_dtype()``, which a fresh build would follow.
"""
from __future__ import annotations

import itertools
import math
import operator
from typing import Hashable

import torch
from torch import nn

from .base import Builder
from .nb201_ops import InferCell, ResNetBasicblock, TinyNetwork, make_op

_PLACEHOLDER = (("none",), ("none", "none"), ("none", "none", "none"))  # op modules are put in per candidate


def _kaiming_bound(weight: torch.Tensor) -> float:
    """The bound of ``nn.init.kaiming_uniform_(weight, a=math.sqrt(5))`` (Conv2d's and Linear's default
    initialisation), computed as torch computes it (the same float, so the same draws)."""
    fan_in = nn.init._calculate_correct_fan(weight, "fan_in")
    gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    return math.sqrt(3.0) * (gain / math.sqrt(fan_in))


class _Part:
    """A module of the network with what a candidate's initialisation needs from it.

    ``draws``: (tensor, bound) pairs it draws, in construction order; ``ones``/``zeros``: the
    BatchNorm tensors reset to 1 and 0; ``hooks``/``containers``: the dicts of its modules'
    hooks and of their children, parameters and buffers (what :class:`_Snapshot` checks).
    """

    def __init__(self, module: nn.Module, modules: list[nn.Module] | None = None):
        self.module = module
        self.modules = list(module.modules()) if modules is None else modules
        self.draws: list[tuple[torch.Tensor, float]] = []
        self.ones: list[torch.Tensor] = []
        self.zeros: list[torch.Tensor] = []
        for m in self.modules:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                self.draws.append((m.weight, _kaiming_bound(m.weight)))
                if m.bias is not None:  # Linear: uniform in +-1/sqrt(fan_in)
                    fan_in = nn.init._calculate_correct_fan(m.weight, "fan_in")
                    self.draws.append((m.bias, 1 / math.sqrt(fan_in) if fan_in > 0 else 0))
            elif isinstance(m, nn.BatchNorm2d):
                self.ones += [m.weight, m.running_var]
                self.zeros += [m.bias, m.running_mean, m.num_batches_tracked]
        self.parameters = [p for m in self.modules for p in m._parameters.values() if p is not None]
        self.hooks = [d for m in self.modules
                      for d in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks)]
        self.containers = [d for m in self.modules for d in (m._modules, m._parameters, m._buffers)]
        self.tensors = [t for m in self.modules for d in (m._parameters, m._buffers) for t in d.values()
                        if t is not None]

    def reset_state(self) -> None:
        """Train mode, no gradients, every parameter requiring one (a fresh build's state)."""
        for m in self.modules:
            if not m.training:
                m.training = True
        for p in self.parameters:
            if p.grad is not None:
                p.grad = None
            if not p.requires_grad:
                p.requires_grad_(True)


class _Snapshot:
    """The modules, parameters and buffers a network holds, and the memory of each tensor: ``intact()``
    tells whether anything but values, modes and gradients has changed since (a score may leave hooks
    on it, replace a module or a parameter, or move it with ``.to``/``.half()``/``.data = ...``)."""

    def __init__(self, parts: list[_Part]):
        self.hooks = [d for part in parts for d in part.hooks]
        self.containers = [d for part in parts for d in part.containers]
        self.values = self._values()
        self.tensors = [t for part in parts for t in part.tensors]
        self.pointers = list(map(torch.Tensor.data_ptr, self.tensors))

    def _values(self) -> list:
        return list(itertools.chain.from_iterable(map(dict.values, self.containers)))

    def intact(self) -> bool:
        if any(self.hooks):
            return False
        values = self._values()
        if len(values) != len(self.values) or not all(map(operator.is_, values, self.values)):
            return False
        return list(map(torch.Tensor.data_ptr, self.tensors)) == self.pointers


class NB201Builder(Builder):
    """Builds NB201 candidates by rewiring and re-initialising one network (see the module's docstring).

    ``build(candidate, seed)`` gives the network of ``torch.manual_seed(seed); space.build(candidate,
    num_classes, C=C, N=N, in_channels=in_channels)`` on ``device``, in train mode, with no gradients.
    The weights are drawn on the CPU, as a fresh build draws them: in place on a CPU; elsewhere into
    one staging buffer, copied to the device at once.
    """

    def __init__(self, space, device: torch.device | str = "cpu", num_classes: int = 10, C: int = 16, N: int = 5,
                 in_channels: int = 3):
        sizes = space.check_sizes(num_classes=num_classes, C=C, N=N, in_channels=in_channels)
        num_classes = sizes.pop("num_classes")
        super().__init__(space, device, num_classes, **sizes)
        self.generator = torch.Generator()
        self.staged = self.device.type != "cpu"
        self._start()

    def _start(self) -> None:
        """A new network (placeholder cells) and an empty pool of op modules."""
        with torch.random.fork_rng(devices=[]):  # its own draws are replaced for every candidate
            network = TinyNetwork(_PLACEHOLDER, num_classes=self.num_classes, **self.options)
        self.network = net = network.to(self.device)
        self.dtype = torch.get_default_dtype()
        self.pool: dict[tuple[int, int, str], _Part] = {}
        self.ops: tuple[str, ...] | None = None  # the ops in place
        # The skeleton's parts in construction order; None marks where a searched cell's ops go.
        self.skeleton: list[_Part | None] = [_Part(net.stem)]
        self.skeleton += [_Part(cell) if isinstance(cell, ResNetBasicblock) else None for cell in net.cells]
        self.skeleton += [_Part(net.lastact), _Part(net.classifier)]
        # The rest (the network, its cell list, the searched cells and their op lists, the pooling): the
        # modules of no part, which hold no parameters; the op lists' children change per candidate.
        taken = {id(m) for part in self.skeleton if part is not None for m in part.modules}
        taken |= {id(op) for cell in net.cells if isinstance(cell, InferCell) for op in cell.layers}
        self.frame = _Part(net, [m for m in net.modules() if id(m) not in taken])
        self.snapshot = _Snapshot([self.frame])  # of the network as the last build left it

    def build(self, candidate: Hashable, seed: int) -> nn.Module:
        ops = self.space.ops(candidate)
        if self.network is None or self.dtype != torch.get_default_dtype() or not self.snapshot.intact():
            self._start()  # (closed; a fresh build would now be of another dtype; changed by a score)
        parts = self._rewire(ops)
        draws = [d for part in parts for d in part.draws]
        with torch.no_grad():
            if self.staged:
                self._copy(self._staged_draws(draws, seed), draws)
            else:
                generator = self.generator.manual_seed(seed)
                for tensor, bound in draws:
                    tensor.uniform_(-bound, bound, generator=generator)
            for part in parts:  # (a loop: CPU _foreach_ ops are slower for ~300 small tensors)
                for t in part.ones:
                    t.fill_(1)
                for t in part.zeros:
                    t.zero_()
        for part in (self.frame, *parts):
            part.reset_state()
        return self.network

    def close(self) -> None:
        """Free the network and every op module (a later ``build`` starts over)."""
        super().close()
        self.pool, self.skeleton, self.frame, self.snapshot = {}, [], None, None

    # ---------------------------------------------------------------------------------- helpers
    def _op(self, cell: int, edge: int, op: str) -> _Part:
        """The module of ``op`` on edge ``edge`` of cell ``cell`` (made the first time it is needed)."""
        part = self.pool.get((cell, edge, op))
        if part is None:
            with torch.random.fork_rng(devices=[]):  # (its draws are replaced too)
                module = make_op(op, self.network.widths[cell])
            part = self.pool[cell, edge, op] = _Part(module.to(self.device))
        return part

    def _parts(self, ops: tuple[str, ...]) -> list[_Part]:
        """The network's parts for ``ops``, in construction order (the order of a fresh build's draws)."""
        parts: list[_Part] = []
        for position, part in enumerate(self.skeleton):
            if part is not None:
                parts.append(part)
            else:
                parts += [self._op(position - 1, edge, op) for edge, op in enumerate(ops)]
        return parts

    def _rewire(self, ops: tuple[str, ...]) -> list[_Part]:
        """Put the op modules of ``ops`` in place; the network's parts in construction order."""
        parts = self._parts(ops)
        if ops != self.ops:
            for index, cell in enumerate(self.network.cells):
                if isinstance(cell, InferCell):
                    for edge, op in enumerate(ops):
                        cell.layers._modules[str(edge)] = self.pool[index, edge, op].module
            self.ops = ops
        self.snapshot = _Snapshot([self.frame, *parts])
        return parts

    def _staged_draws(self, draws: list[tuple[torch.Tensor, float]], seed: int) -> torch.Tensor:
        """The draws into one flat CPU tensor, in order (pinned for a CUDA device: its copy does not wait)."""
        staged = torch.empty(sum(t.numel() for t, _ in draws), dtype=self.dtype, pin_memory=self.device.type == "cuda")
        generator = self.generator.manual_seed(seed)
        for chunk, (_, bound) in zip(staged.split([t.numel() for t, _ in draws]), draws):
            chunk.uniform_(-bound, bound, generator=generator)
        return staged

    def _copy(self, staged: torch.Tensor, draws: list[tuple[torch.Tensor, float]]) -> None:
        """The staged weights into the network's tensors: one copy to the device, then one copy per tensor there."""
        source = staged.to(self.device, non_blocking=True)
        sizes = [t.numel() for t, _ in draws]
        torch._foreach_copy_([t for t, _ in draws], [c.view_as(t) for c, (t, _) in zip(source.split(sizes), draws)])
