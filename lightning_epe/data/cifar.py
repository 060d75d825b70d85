"""CIFAR-10 and CIFAR-100 through torchvision, with NAS-Bench-201's augmentation and normalisation."""
from __future__ import annotations

import http.client
from pathlib import Path

import torch
from torchvision import datasets

from lightning_epe.data._common import TRAIN, DownloadError, ImageDataModule, check_files, offline_alternatives

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


class _CIFARDataModule(ImageDataModule):
    """CIFAR through ``torchvision.datasets``; subclasses name the dataset class and its constants."""

    dataset_cls: type[datasets.CIFAR10]
    name: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    in_channels, image_size = 3, 32

    def __init__(self, data_dir: str | Path = "data", batch_size: int = 256, download: bool = False,
                 num_workers: int = 0, val_fraction: float = 0.1, seed: int = 0, augment: bool = True):
        """
        Args:
            data_dir: Folder holding (or receiving, with ``download``) torchvision's extracted
                ``cifar-10-batches-py/`` or ``cifar-100-python/`` folder.
            batch_size: Images per batch, in every split.
            download: Download the data set (about 170 MB) in ``prepare_data`` if it is not in ``data_dir``.
            num_workers: ``DataLoader`` worker processes (0 loads in the main process).
            val_fraction: Share of the 50,000 training images held out (stratified by class, chosen by
                ``seed``, not augmented) for validation; 0 gives an empty validation set.
            seed: Seeds the validation split and the training loader's shuffling.
            augment: NAS-Bench-201's training augmentation (random horizontal flip, 32x32 random crop
                with 4 pixels of zero padding); off, training images are only normalised.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, val_fraction=val_fraction,
                         augment=augment, mean=self.mean, std=self.std)
        self.save_hyperparameters()
        self.data_dir, self.download = Path(data_dir), download

    def prepare_data(self) -> None:
        """With ``download=True``: download and extract the archive unless it is already there. Without a
        network this raises :class:`~lightning_epe.data.DownloadError` saying what was tried, where the
        files were looked for and the offline alternatives."""
        if not self.download:
            return
        cls = self.dataset_cls
        try:
            cls(self.data_dir, train=False, download=True)
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, refused or reset connections
            folder = (self.data_dir / cls.base_folder).resolve()
            raise DownloadError(
                f"could not download {self.name}: tried {cls.url} (into {(self.data_dir / cls.filename).resolve()}) "
                f"and failed with {type(err).__name__}: {err}. The extracted files were looked for first in "
                f"{folder}/ and are not there. No network? "
                + offline_alternatives(cls.filename, cls.base_folder, self.data_dir)
            ) from err

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        cls = self.dataset_cls
        hint = ("Pass download=True to download it in prepare_data() (which the Trainer calls before setup())."
                if not self.download else "download=True downloads it in prepare_data(); call that first.")
        files = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        check_files(self.data_dir / cls.base_folder, files, self.name,
                    f"{hint} Or set data_dir to the folder that contains {cls.base_folder}/.")
        dataset = cls(self.data_dir, train=split == TRAIN, download=False)
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()  # torchvision keeps HWC
        return images, torch.tensor(dataset.targets)


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10 (torchvision): 50,000 training / 10,000 official test images, 32x32 RGB, 10 classes.

    Normalised with mean (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435, 0.2616), as NAS-Bench-201.
    """

    dataset_cls, name, num_classes = datasets.CIFAR10, "CIFAR-10", 10
    mean, std = CIFAR10_MEAN, CIFAR10_STD


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100 (torchvision, fine labels): 50,000 training / 10,000 official test images, 32x32 RGB,
    100 classes. Normalised with mean (0.5071, 0.4865, 0.4409) and std (0.2673, 0.2564, 0.2762)."""

    dataset_cls, name, num_classes = datasets.CIFAR100, "CIFAR-100", 100
    mean, std = CIFAR100_MEAN, CIFAR100_STD
