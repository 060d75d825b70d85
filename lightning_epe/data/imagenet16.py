"""NAS-Bench-201's down-sampled ImageNet 16x16 (ImageNet16-120 by default) from a local folder."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from lightning_epe.data._common import TRAIN, ImageDataModule, check_files

IMAGENET16_MEAN = tuple(x / 255 for x in (122.68, 116.66, 104.01))
IMAGENET16_STD = tuple(x / 255 for x in (63.22, 61.26, 65.09))
IMAGENET16_FILES = {TRAIN: [f"train_data_batch_{i}" for i in range(1, 11)], "test": ["val_data"]}


class ImageNet16DataModule(ImageDataModule):
    """Down-sampled ImageNet at 16x16 (Chrabaszcz et al., 2017) in NAS-Bench-201's layout.

    ``data_dir`` holds ``train_data_batch_1`` .. ``train_data_batch_10`` and ``val_data``: pickles of
    dicts with ``data`` (N x 768 uint8, channel-planar RGB 16x16) and ``labels`` (1..1000). Only the
    images labelled 1..``num_classes`` are kept, relabelled 0..``num_classes - 1`` (120 gives
    NAS-Bench-201's ImageNet16-120). ``val_data`` (50 images per class) is the test split.
    Normalisation and augmentation are NAS-Bench-201's. Nothing is downloaded.
    """

    in_channels, image_size = 3, 16

    def __init__(self, data_dir: str | Path, num_classes: int = 120, batch_size: int = 256, num_workers: int = 0,
                 val_fraction: float = 0.1, seed: int = 0, augment: bool = True):
        """
        Args:
            data_dir: Folder holding ``train_data_batch_1`` .. ``train_data_batch_10`` and ``val_data``.
            num_classes: Keep the classes labelled 1..num_classes (120: ImageNet16-120; 1000: all).
            batch_size: Images per batch, in every split.
            num_workers: ``DataLoader`` worker processes (0 loads in the main process).
            val_fraction: Share of the training images held out (stratified by class, chosen by ``seed``,
                not augmented) for validation; 0 gives an empty validation set.
            seed: Seeds the validation split and the training loader's shuffling.
            augment: NAS-Bench-201's training augmentation (random horizontal flip, 16x16 random crop
                with 2 pixels of zero padding); off, training images are only normalised.
        """
        if not 1 <= num_classes <= 1000:
            raise ValueError(f"num_classes must be in 1..1000 (ImageNet16 labels are 1..1000), got {num_classes}")
        self.num_classes = num_classes
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, val_fraction=val_fraction,
                         augment=augment, mean=IMAGENET16_MEAN, std=IMAGENET16_STD)
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        files = IMAGENET16_FILES[split]
        check_files(self.data_dir, files, f"ImageNet16 {split} data",
                    "Set data_dir to the folder of the 16x16 down-sampled ImageNet pickles (NAS-Bench-201's "
                    "ImageNet16/ folder, or Imagenet16_train/ and Imagenet16_val/ from image-net.org merged); "
                    "it cannot be downloaded automatically.")
        images, labels = [], []
        for name in files:
            with open(self.data_dir / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")
            batch_labels = np.asarray(entry["labels"], dtype=np.int64)
            if batch_labels.min(initial=1) < 1:
                raise ValueError(f"{self.data_dir / name}: labels must be 1-based (1..1000), "
                                 f"found {batch_labels.min()}")
            keep = batch_labels <= self.num_classes  # filter per file: the full set is 1.28M images
            images.append(np.asarray(entry["data"], dtype=np.uint8)[keep].reshape(-1, 3, 16, 16))
            labels.append(batch_labels[keep] - 1)
        return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
