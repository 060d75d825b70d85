"""The processes that score together, on Lightning Fabric (one process unless asked for more).

Fabric gives the search Lightning's launchers and cluster environments: ``devices=2,
strategy="ddp"`` re-launches the command once per device, and torchrun or SLURM launches are
detected as Lightning detects them.
"""
from __future__ import annotations

import torch


class Workers:
    def __init__(self, accelerator: str = "auto", devices: int | str = 1, num_nodes: int = 1,
                 strategy: str = "auto"):
        from lightning.fabric import Fabric

        self.fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy)
        self.fabric.launch()

    @property
    def rank(self) -> int:
        return self.fabric.global_rank

    @property
    def world_size(self) -> int:
        return self.fabric.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    def gather(self, items: list) -> list:
        """Every process's ``items``, concatenated in rank order, on every process."""
        if self.world_size == 1:
            return list(items)
        everyone: list = [None] * self.world_size
        torch.distributed.all_gather_object(everyone, items)
        return [item for part in everyone for item in part]

    def barrier(self) -> None:
        self.fabric.barrier()

    def prepare_data(self, datamodule) -> None:
        """``prepare_data`` once per node (downloads), then everyone waits for it."""
        if self.fabric.local_rank == 0:
            datamodule.prepare_data()
        self.barrier()
