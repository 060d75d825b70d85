"""Seeding the RNG a network is initialised from, without leaving a trace on the global RNG."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed the RNG a network is initialised from; every global RNG state is restored on exit.

    On CPU only the CPU generator is seeded (``torch.manual_seed`` would also queue a seed for
    every CUDA device, which ``fork_rng`` would not undo); on CUDA all devices are forked.
    """
    if torch.device(device).type == "cuda":
        with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
            torch.manual_seed(seed)
            yield
    else:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
