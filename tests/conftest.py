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
