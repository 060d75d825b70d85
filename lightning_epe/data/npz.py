"""Images from an ``.npz`` file (``x``: uint8 N x H x W x C, ``y``: int labels), for benchmarks."""
from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from lightning_epe.data._common import ImageDataModule
from lightning_epe.data.cifar import CIFAR10_MEAN, CIFAR10_STD


def _npz_header(path: Path, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of array ``key`` in an ``.npz``, read from its header without loading it."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return shape, dtype


class NPZDataModule(ImageDataModule):
    """Images from one ``.npz`` file: ``x`` uint8 (N, H, W, C) HWC and ``y`` integer labels (0-based),
    e.g. ``../shared/data/cifar10/cifar10_sample.npz``. ``num_classes`` is ``max(y) + 1`` unless
    given. Validation and test sets are optional seeded, class-stratified shares of the file; by
    default every image is for training (what a scoring batch needs).
    """

    has_test_split = False

    def __init__(self, path: str | Path, batch_size: int = 256, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD, num_classes: int | None = None, val_fraction: float = 0.0,
                 test_fraction: float = 0.0, augment: bool = False, seed: int = 0, num_workers: int = 0):
        """
        Args:
            path: The ``.npz`` file, with arrays ``x`` (uint8, N x H x W x C) and ``y`` (labels 0..K-1).
            batch_size: Images per batch, in every split.
            mean: Per-channel mean of the images scaled to [0, 1] (default: CIFAR-10's).
            std: Per-channel standard deviation (default: CIFAR-10's).
            num_classes: Number of classes; ``None`` reads ``max(y) + 1`` from the file.
            val_fraction: Share of the images held out for validation (stratified by class).
            test_fraction: Share of the images held out for testing (stratified by class).
            augment: NAS-Bench-201-style training augmentation: random horizontal flip, then a random
                crop of the full size with size // 8 pixels of zero padding.
            seed: Seeds the split and the training loader's shuffling.
            num_workers: ``DataLoader`` worker processes (0 loads in the main process).
        """
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"no .npz file at {self.path.resolve()}")
        shape, dtype = _npz_header(self.path, "x")
        if len(shape) != 4 or dtype != np.uint8:
            raise ValueError(f"{self.path}: 'x' must be uint8 (N, H, W, C), got {dtype} {shape}")
        _, height, width, self.in_channels = shape
        self.image_size = height if height == width else (height, width)
        if num_classes is None:
            with np.load(self.path) as data:
                num_classes = int(data["y"].max()) + 1
        self.num_classes = num_classes
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, val_fraction=val_fraction,
                         test_fraction=test_fraction, augment=augment, mean=mean, std=std)
        self.save_hyperparameters()

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        with np.load(self.path) as data:
            images, labels = data["x"], data["y"].astype(np.int64)
        return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)
