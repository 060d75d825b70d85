"""What every datamodule shares: the in-memory image dataset, the NB201 transforms, the seeded
stratified split and the base ``LightningDataModule`` with its loaders."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

TRAIN, TEST = "train", "test"


class ImageDataset(Dataset):
    """Images held in memory as a uint8 tensor (N, C, H, W), labels as int64; ``transform`` runs per item."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, transform=None):
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(targets):
            raise ValueError(f"expected uint8 images (N, C, H, W) and N labels, got {tuple(images.shape)} "
                             f"{images.dtype} and {len(targets)} labels")
        self.images, self.targets, self.transform = images, targets.long(), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.images[index]
        return (self.transform(image) if self.transform else image), self.targets[index]


def image_transform(mean: Sequence[float], std: Sequence[float], *, augment_size=None, flip: bool = True):
    """uint8 CHW tensor -> normalised float tensor, as NAS-Bench-201 does with PIL + ``ToTensor``
    (same numbers: x / 255, then ``Normalize``). With ``augment_size`` (the image size) it first applies
    NB201's training augmentation: ``RandomHorizontalFlip`` (if ``flip``) then
    ``RandomCrop(size, padding=size // 8)`` (padding 4 at 32x32, 2 at 16x16)."""
    steps = []
    if augment_size is not None:
        padding = (min(augment_size) if isinstance(augment_size, tuple) else augment_size) // 8
        steps += [transforms.RandomHorizontalFlip()] if flip else []
        steps += [transforms.RandomCrop(augment_size, padding=padding)]
    steps += [transforms.ConvertImageDtype(torch.float32), transforms.Normalize(mean, std)]
    return transforms.Compose(steps)


def stratified_split(labels, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Seeded, class-stratified split of ``range(len(labels))``: one index array per fraction (each
    ``round(fraction * N)`` long), then the rest. Deterministic given the seed; a larger fraction
    gives a superset of a smaller one's first part."""
    labels = np.asarray(labels)
    n = len(labels)
    order = np.random.default_rng(seed).permutation(n)
    classes, inverse, counts = np.unique(labels[order], return_inverse=True, return_counts=True)
    # rank of each sample among its class (in the shuffled order), as a fraction of the class size:
    # sorting by it interleaves the classes so that every prefix holds them in proportion
    by_class = np.argsort(inverse, kind="stable")
    rank = np.empty(n)
    rank[by_class] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
    order = order[np.argsort((rank + 0.5) / counts[inverse], kind="stable")]
    ends = np.cumsum([round(f * n) for f in fractions]).tolist()
    return np.split(order, ends)


class DownloadError(ConnectionError):
    """A data set that must be downloaded could not be (no network, a refused or interrupted connection).

    The message says what was tried (the URL), where the data was looked for, the cause, and the
    offline alternatives. A ``ConnectionError`` (an ``OSError``): the command line reports it as an
    error with exit code 1, without a traceback.
    """


def offline_alternatives(archive: str, folder: str, data_dir: Path) -> str:
    """The offline ways to run without the download (for :class:`DownloadError`)."""
    return (f"Offline alternatives: (1) copy the extracted {folder}/ folder into {data_dir.resolve()} and pass "
            f"download=False (--data.init_args.download false), or copy the archive {archive} there and keep "
            "download=True (it is then only extracted); (2) NPZDataModule(path) over an .npz of "
            "images (x: uint8 N x H x W x C, y: labels); "
            "(3) DigitsDataModule(), scikit-learn's hand-written digits, which need no download "
            "(the built-in recipe: lightning-epe search --config quickstart).")


def check_files(folder: Path, names: Sequence[str], what: str, hint: str) -> None:
    """Raise ``FileNotFoundError`` naming the folder, the missing files and ``hint`` if any is absent."""
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{what} not found: looked in {folder.resolve()} for {', '.join(names)}; "
                                f"missing {', '.join(missing)}. {hint}")


class ImageDataModule(LightningDataModule):
    """Base of the package's datamodules: train / val / test ``ImageDataset``s and their loaders.

    Subclasses set ``num_classes``, ``in_channels``, ``image_size`` (and ``flip``, whether mirroring is
    a valid augmentation; ``has_test_split``, whether ``_read("test")`` returns an official test set)
    and implement ``_read(split)`` -> (uint8 images (N, C, H, W), int64 labels). Validation (and the
    test set where there is no official one) is carved out of the training images by
    :func:`stratified_split`, and never augmented.
    """

    num_classes: int
    in_channels: int
    image_size: int | tuple[int, int]
    flip: bool = True
    has_test_split: bool = True

    def __init__(self, *, batch_size: int, num_workers: int, seed: int, val_fraction: float,
                 test_fraction: float = 0.0, augment: bool, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"val_fraction ({val_fraction}) and test_fraction ({test_fraction}) must be in "
                             f"[0, 1) and sum to less than 1")
        if len(mean) != self.in_channels or len(std) != self.in_channels:
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} need one value per channel "
                             f"({self.in_channels})")
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.val_fraction, self.test_fraction, self.augment = val_fraction, test_fraction, augment
        self.mean, self.std = tuple(mean), tuple(std)
        self.train_set = self.val_set = self.test_set = None

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        evaluate = image_transform(self.mean, self.std)
        if self.train_set is None and (stage != "test" or not self.has_test_split):
            images, labels = self._read(TRAIN)
            fractions = [self.val_fraction] + ([] if self.has_test_split else [self.test_fraction])
            *held_out, train = map(torch.from_numpy, stratified_split(labels.numpy(), fractions, self.seed))
            train_transform = (image_transform(self.mean, self.std, augment_size=self.image_size, flip=self.flip)
                               if self.augment else evaluate)
            self.train_set = ImageDataset(images[train], labels[train], train_transform)
            self.val_set = ImageDataset(images[held_out[0]], labels[held_out[0]], evaluate)
            if not self.has_test_split:
                self.test_set = ImageDataset(images[held_out[1]], labels[held_out[1]], evaluate)
        if self.test_set is None and stage in (None, "test"):
            self.test_set = ImageDataset(*self._read(TEST), evaluate)

    def _loader(self, name: str, shuffle: bool = False) -> DataLoader:
        if getattr(self, name) is None:  # used outside a Trainer: prepare and load on first use
            self.prepare_data()
            self.setup("test" if name == "test_set" else "fit")
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(getattr(self, name), batch_size=self.batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Shuffled with a generator seeded by ``seed``: the same batch order on every run."""
        return self._loader("train_set", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val_set")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test_set")
