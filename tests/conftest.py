import hashlib
import importlib.util
import json
import os
import pickle
import sys
from pathlib import Path

# One CPU thread: the test networks are tiny, so threads only add scheduling noise (and
# oversubscription on shared machines); subprocesses started by tests inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightning.pytorch  # noqa: F401  (its log handler binds sys.stderr at import: before any test captures it)
import numpy as np
import pytest
import torch
from torchvision import datasets

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REFERENCE = SHARED / "reference" / "epe_official_seed0"
NB201_CSV = SHARED / "nb201" / "nb201_accuracies.csv"
CIFAR10_SAMPLE = SHARED / "cifar10" / "cifar10_sample.npz"
SOTA = SHARED / "reference" / "sota_official_seed0" / "expected.json"


#: How far a committed EPE value (made on another machine) may move when rescored: 4x the largest relative deviation
#: of EPE over the reference cells measured over emulated CPUs (thread counts, torch/MKL/oneDNN kernel settings,
#: 1-ulp perturbations): 1.5e-3 (best_c10, 120-class branch), by ``python bench/cpu_spread.py run --family epe``
#: (docs/benchmarks/cpu_spread_epe.md). EPE sums logarithms of correlations of input gradients that a CPU's
#: convolution kernels round differently; on one machine, thread count and kernels fixed, it repeats bit for bit.
EPE_RESCORED_REL = 6e-3


# Per column: 4x the largest relative deviation from the committed value measured over emulated CPUs
# on the three cheapest finite cells of each sample, rounded up (`python bench/cpu_spread.py run`,
# docs/benchmarks/cpu_spread.md: 1 and 2 threads, torch/MKL/oneDNN kernel settings, inputs and weights
# times 1 + 1e-7 N(0, 1); max of |ours - committed| and the spread of ours). The rows were made with
# the float32 official paths (VKDNW mode="official"). Counts (params, flops, swap) are exact.
COMMITTED_RTOL = {
    "epe": 4e-4, "jacob_cov": 3e-4, "naswot": 2e-6, "grad_norm": 9e-5, "snip": 9e-5, "synflow": 3e-7,
    "params": 0.0, "flops": 0.0, "swap": 0.0,
    "zico": 4e-2, "meco": 2e-3, "meco_official": 7e-4,
    "az_expressivity": 4e-7, "az_progressivity": 5e-6, "az_trainability": 2e-5, "vkdnw": 3e-6,
}


def load_bench_script(name: str):
    """A script of bench/ as a module (bench/ on sys.path: the scripts import each other)."""
    bench = Path(__file__).resolve().parents[1] / "bench"
    if str(bench) not in sys.path:
        sys.path.insert(0, str(bench))
    spec = importlib.util.spec_from_file_location(name, bench / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs the shared data file {path} (absent on this machine)")
    return path


@pytest.fixture(autouse=True)
def _run_in_tmp_path(tmp_path, monkeypatch):
    """Every test runs in its own temporary directory: whatever it writes relative to the working
    directory (Lightning's lightning_logs/, checkpoints) stays out of the repository."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def reference():
    """The official code's test vectors: expected values, inputs and per-tag state dicts."""
    expected = json.loads(require(REFERENCE / "expected.json").read_text())["archs"]
    inputs = np.load(REFERENCE / "inputs.npz")
    return {
        "expected": expected,
        "x": torch.from_numpy(inputs["x"]),
        "y": torch.from_numpy(inputs["y"]),
        "state_dict": lambda tag: {k: torch.from_numpy(v)
                                   for k, v in np.load(REFERENCE / f"state_dict_{tag}.npz").items()},
    }


@pytest.fixture(scope="session")
def sota():
    """The state-of-the-art proxies' official values on the reference cells (sota_official_seed0/expected.json)."""
    return json.loads(require(SOTA).read_text())["archs"]


def official_net(reference, tag: str):
    """The reference NB201 network ``tag`` (C=16, N=5, 10 classes) with the official test vectors' weights."""
    from lightning_epe.spaces import NB201Space

    net = NB201Space().build(reference["expected"][tag]["arch_str"], num_classes=10)
    net.load_state_dict(reference["state_dict"](tag), strict=True)
    return net


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


# Tiny data sets in the real on-disk formats (CIFAR: torchvision's; ImageNet16: NAS-Bench-201's).

def write_pickle(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))
    return [path.name, hashlib.md5(path.read_bytes()).hexdigest()]


def random_images(rng, n, size):
    return rng.integers(0, 256, (n, 3 * size * size), dtype=np.uint8)  # channel-planar rows


@pytest.fixture
def cifar_dir(tmp_path, monkeypatch):
    """Tiny CIFAR-10 and CIFAR-100 in torchvision's on-disk format (4 images per class per split).
    torchvision checks each file's md5: the class's lists are patched with the tiny files' md5s, so
    the integrity check still runs, against these files."""
    rng = np.random.default_rng(0)
    c10 = tmp_path / "cifar-10-batches-py"
    labels = np.arange(40) % 10
    train = [write_pickle(c10 / f"data_batch_{i + 1}",
                          {"data": random_images(rng, 8, 32), "labels": labels[8 * i:8 * i + 8].tolist()})
             for i in range(5)]
    test = [write_pickle(c10 / "test_batch", {"data": random_images(rng, 40, 32), "labels": labels.tolist()})]
    meta = write_pickle(c10 / "batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train)
    monkeypatch.setattr(datasets.CIFAR10, "test_list", test)
    monkeypatch.setattr(datasets.CIFAR10, "meta", {"filename": meta[0], "key": "label_names", "md5": meta[1]})

    c100 = tmp_path / "cifar-100-python"
    labels = list(range(100)) * 4
    train = [write_pickle(c100 / "train", {"data": random_images(rng, 400, 32), "fine_labels": labels,
                                           "coarse_labels": labels})]
    test = [write_pickle(c100 / "test", {"data": random_images(rng, 400, 32), "fine_labels": labels,
                                         "coarse_labels": labels})]
    meta = write_pickle(c100 / "meta", {"fine_label_names": [f"f{i}" for i in range(100)]})
    monkeypatch.setattr(datasets.CIFAR100, "train_list", train)
    monkeypatch.setattr(datasets.CIFAR100, "test_list", test)
    monkeypatch.setattr(datasets.CIFAR100, "meta", {"filename": meta[0], "key": "fine_label_names", "md5": meta[1]})
    return tmp_path


@pytest.fixture
def imagenet16_dir(tmp_path):
    rng = np.random.default_rng(0)
    for name in [f"train_data_batch_{i}" for i in range(1, 11)] + ["val_data"]:
        labels = rng.integers(1, 201, 60)  # 1-based, beyond 120 too
        write_pickle(tmp_path / name, {"data": random_images(rng, 60, 16), "labels": labels.tolist(),
                                       "mean": np.zeros(768)})
    return tmp_path


