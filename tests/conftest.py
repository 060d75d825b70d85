import json
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFERENCE = SHARED / "reference" / "epe_official_seed0"
NB201_CSV = SHARED / "nb201" / "nb201_accuracies.csv"
CIFAR10_SAMPLE = SHARED / "cifar10" / "cifar10_sample.npz"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared data file {path} (absent on this machine)")
    return path


@pytest.fixture(scope="session")
def reference():
    """The official code's test vectors: expected values, inputs and per-tag state dicts."""
    expected = json.loads(require(REFERENCE / "expected.json").read_text())["archs"]
    inputs = np.load(REFERENCE / "inputs.npz")
    return {
        "expected": expected,
        "x": torch.from_numpy(inputs["x"]),
        "y": torch.from_numpy(inputs["y"]),
        "state_dict": lambda tag: {k: torch.from_numpy(v) for k, v in np.load(REFERENCE / f"state_dict_{tag}.npz").items()},
    }


@pytest.fixture
def tiny_batch():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 3, 8, 8, generator=g)
    y = torch.arange(24) % 4
    return x, y


class TinyDataModule:
    """A minimal map-style datamodule (no Lightning needed) for search tests: 4 classes, 8x8 images."""

    num_classes = 4
    batch_size = 16

    def __init__(self, n: int = 64, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.arange(n) % 4

    def prepare_data(self):
        pass

    def setup(self, stage=None):
        pass

    def train_dataloader(self):
        from torch.utils.data import DataLoader, TensorDataset

        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size, shuffle=True)


@pytest.fixture
def tiny_data():
    return TinyDataModule()
