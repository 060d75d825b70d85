"""The offline default: scikit-learn's hand-written digits (shipped with scikit-learn), as 32x32 RGB."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from lightning_epe.data._common import ImageDataModule

# mean and std of all 1,797 images after the bilinear upscaling to 32x32 below
DIGITS_MEAN, DIGITS_STD = (0.3052,) * 3, (0.3236,) * 3


class DigitsDataModule(ImageDataModule):
    """scikit-learn's ``load_digits``: 1,797 real 8x8 grey images of the digits 0-9, read from the
    scikit-learn installation (no download), upscaled (bilinear) to 32x32 and repeated to 3 channels,
    so that CIFAR-sized networks run on it unchanged. Normalised with mean 0.3052 and std 0.3236 (all
    channels). Train / validation / test are a seeded, class-stratified split held in memory.
    """

    num_classes, in_channels, image_size = 10, 3, 32
    flip = False  # a mirrored digit is not the same digit
    has_test_split = False

    def __init__(self, batch_size: int = 64, seed: int = 0, num_workers: int = 0, val_fraction: float = 0.1,
                 test_fraction: float = 0.2, augment: bool = False):
        """
        Args:
            batch_size: Images per batch, in every split.
            seed: Seeds the train / validation / test split and the training loader's shuffling.
            num_workers: ``DataLoader`` worker processes (0, the default, is fastest for this small set).
            val_fraction: Share of the 1,797 images used for validation (stratified by class).
            test_fraction: Share of the images used for testing (stratified by class).
            augment: Random 32x32 crops with 4 pixels of zero padding (no flips) for training.
        """
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, val_fraction=val_fraction,
                         test_fraction=test_fraction, augment=augment, mean=DIGITS_MEAN, std=DIGITS_STD)
        self.save_hyperparameters()

    def _read(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        digits = load_digits()
        grey = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16  # values 0..16
        grey = F.interpolate(grey, size=self.image_size, mode="bilinear", align_corners=False)
        images = (grey * 255).round().to(torch.uint8).expand(-1, self.in_channels, -1, -1).contiguous()
        return images, torch.from_numpy(digits.target)
