"""LightningDataModules for image classification (device-agnostic; configure them from YAML).

Every datamodule has ``num_classes``, ``in_channels`` and ``image_size`` right after construction,
and ``train_dataloader`` (shuffled by a generator seeded with ``seed``), ``val_dataloader`` and
``test_dataloader``.
"""
from lightning_epe.data._common import DownloadError
from lightning_epe.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from lightning_epe.data.digits import DigitsDataModule
from lightning_epe.data.imagenet16 import ImageNet16DataModule
from lightning_epe.data.npz import NPZDataModule

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule", "DigitsDataModule", "DownloadError", "ImageNet16DataModule",
           "NPZDataModule"]
