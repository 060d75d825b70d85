import pickle

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import datasets, transforms

from lightning_epe.data import (
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    ImageNet16DataModule,
    NPZDataModule,
)
from lightning_epe.data._common import stratified_split
from lightning_epe.data.cifar import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from lightning_epe.data.imagenet16 import IMAGENET16_MEAN, IMAGENET16_STD
from tests.conftest import CIFAR10_SAMPLE, require


@pytest.mark.parametrize("cls, folder, test_file, classes, mean, std", [
    (CIFAR10DataModule, "cifar-10-batches-py", "test_batch", 10, CIFAR10_MEAN, CIFAR10_STD),
    (CIFAR100DataModule, "cifar-100-python", "test", 100, CIFAR100_MEAN, CIFAR100_STD),
])
def test_cifar_reads_torchvision_files(cifar_dir, cls, folder, test_file, classes, mean, std):
    dm = cls(data_dir=cifar_dir, batch_size=16, val_fraction=0.25)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (classes, 3, 32)
    dm.setup("fit")
    assert dm.test_set is None  # the test set is read only when a stage needs it
    assert (len(dm.train_set), len(dm.val_set)) == (3 * classes, classes)
    assert torch.bincount(dm.val_set.targets).tolist() == [1] * classes  # stratified
    dm.setup("test")
    assert len(dm.test_set) == 4 * classes
    # test and validation images: NB201's PIL pipeline (ToTensor + Normalize), bit for bit
    raw = pickle.loads((cifar_dir / folder / test_file).read_bytes())["data"][0].reshape(3, 32, 32)
    nb201 = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    assert torch.equal(dm.test_set[0][0], nb201(Image.fromarray(raw.transpose(1, 2, 0))))
    assert not any(isinstance(t, transforms.RandomCrop) for t in dm.val_set.transform.transforms)
    flip, crop = [t for t in dm.train_set.transform.transforms if isinstance(t, (transforms.RandomCrop,
                                                                                 transforms.RandomHorizontalFlip))]
    assert isinstance(flip, transforms.RandomHorizontalFlip) and (crop.size, crop.padding) == ((32, 32), 4)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_cifar_checks_integrity_and_missing_files(cifar_dir, tmp_path_factory, monkeypatch):
    missing = r"(?s)looked in .*cifar-10-batches-py.*missing data_batch_1.*download=True"
    with pytest.raises(FileNotFoundError, match=missing):
        CIFAR10DataModule(data_dir=tmp_path_factory.mktemp("empty")).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"call that first"):  # download happens in prepare_data
        CIFAR100DataModule(data_dir=tmp_path_factory.mktemp("empty"), download=True).setup("fit")
    monkeypatch.setattr(datasets.CIFAR10, "test_list", [["test_batch", "0" * 32]])
    with pytest.raises(RuntimeError, match="corrupted"):  # torchvision's md5 check is not bypassed
        CIFAR10DataModule(data_dir=cifar_dir).setup("test")


def test_imagenet16_120(imagenet16_dir):
    dm = ImageNet16DataModule(imagenet16_dir, batch_size=8)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (120, 3, 16)
    dm.setup()
    val = pickle.loads((imagenet16_dir / "val_data").read_bytes())
    keep = np.asarray(val["labels"]) <= 120
    assert dm.test_set.targets.tolist() == (np.asarray(val["labels"])[keep] - 1).tolist()
    assert 0 <= dm.train_set.targets.min() and dm.train_set.targets.max() <= 119
    raw = torch.from_numpy(val["data"][keep][0].reshape(3, 16, 16)).float() / 255  # channel-planar RGB
    expected = (raw - torch.tensor(IMAGENET16_MEAN)[:, None, None]) / torch.tensor(IMAGENET16_STD)[:, None, None]
    torch.testing.assert_close(dm.test_set[0][0], expected)
    flip, crop = [t for t in dm.train_set.transform.transforms if isinstance(t, (transforms.RandomCrop,
                                                                                 transforms.RandomHorizontalFlip))]
    assert isinstance(flip, transforms.RandomHorizontalFlip) and (crop.size, crop.padding) == ((16, 16), 2)
    assert next(iter(dm.train_dataloader()))[0].shape == (8, 3, 16, 16)
    assert len(ImageNet16DataModule(imagenet16_dir, num_classes=1000)._read("test")[1]) == 60


def test_imagenet16_missing_files(imagenet16_dir):
    (imagenet16_dir / "train_data_batch_7").unlink()
    dm = ImageNet16DataModule(imagenet16_dir)
    with pytest.raises(FileNotFoundError, match=r"looked in .* missing train_data_batch_7\. Set data_dir"):
        dm.setup("fit")
    dm.setup("test")  # the test split needs only val_data
    with pytest.raises(ValueError, match="1..1000"):
        ImageNet16DataModule(imagenet16_dir, num_classes=0)


def test_digits_end_to_end():
    dm = DigitsDataModule()
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 3, 32)
    dm.setup()
    sizes = len(dm.train_set), len(dm.val_set), len(dm.test_set)
    assert sizes == (1258, 180, 359) and sum(sizes) == 1797
    for split in (dm.val_set, dm.test_set):
        assert torch.bincount(split.targets, minlength=10).min() >= len(split) // 10 - 2  # stratified
    x = torch.stack([dm.train_set[i][0] for i in range(len(dm.train_set))])
    assert x.shape == (1258, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 2])  # grey repeated to 3 channels
    assert abs(x.mean()) < 0.05 and abs(x.std() - 1) < 0.05
    assert sorted(dm.train_set.targets.unique().tolist()) == list(range(10))
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (64, 3, 32, 32) and yb.dtype == torch.int64


def test_digits_split_and_shuffle_follow_the_seed():
    a, b, c = DigitsDataModule(seed=0), DigitsDataModule(seed=0), DigitsDataModule(seed=1)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a.test_set.images, b.test_set.images)
    assert not torch.equal(a.test_set.images, c.test_set.images)
    loader = a.train_dataloader()
    first, second = [next(iter(loader))[1] for _ in range(2)]
    assert not torch.equal(first, second)  # a new order every epoch ...
    assert torch.equal(first, next(iter(b.train_dataloader()))[1])  # ... the same on every run


def test_digits_augmentation_crops_without_flipping():
    dm = DigitsDataModule(augment=True)
    dm.setup()
    steps = dm.train_set.transform.transforms
    assert any(isinstance(t, transforms.RandomCrop) for t in steps)
    assert not any(isinstance(t, transforms.RandomHorizontalFlip) for t in steps)
    with pytest.raises(ValueError, match="sum to less than 1"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.5)


def test_stratified_split():
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    val, test, train = stratified_split(labels, [0.2, 0.1], seed=3)
    assert (len(val), len(test), len(train)) == (20, 10, 70)
    assert sorted(np.concatenate([val, test, train]).tolist()) == list(range(100))
    assert np.bincount(labels[val]).tolist() == [10, 6, 3, 1]
    again = stratified_split(labels, [0.3], seed=3)[0]
    assert np.array_equal(again[:20], val)  # a larger share extends a smaller one


def test_npz_sample():
    path = require(CIFAR10_SAMPLE)
    dm = NPZDataModule(path, batch_size=100, val_fraction=0.1, test_fraction=0.2)
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 3, 32)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (700, 100, 200)
    assert torch.bincount(dm.val_set.targets).tolist() == [10] * 10
    x = torch.stack([dm.test_set[i][0] for i in range(len(dm.test_set))])
    assert (x.mean((0, 2, 3)).abs() < 0.15).all() and ((x.std((0, 2, 3)) - 1).abs() < 0.1).all()
    whole = NPZDataModule(path)  # default: every image for training (a scoring batch)
    xb, yb = next(iter(whole.train_dataloader()))
    assert xb.shape == (256, 3, 32, 32) and len(whole.train_set) == 1000


def test_npz_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .npz file"):
        NPZDataModule(tmp_path / "absent.npz")
    np.savez(tmp_path / "float.npz", x=np.zeros((4, 8, 8, 3), np.float32), y=np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="must be uint8"):
        NPZDataModule(tmp_path / "float.npz")
    np.savez(tmp_path / "grey.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=np.arange(4))
    with pytest.raises(ValueError, match="one value per channel"):
        NPZDataModule(tmp_path / "grey.npz")
    grey = NPZDataModule(tmp_path / "grey.npz", mean=[0.5], std=[0.25], batch_size=4)
    assert (grey.num_classes, grey.in_channels, grey.image_size) == (4, 1, 8)
    assert torch.equal(next(iter(grey.train_dataloader()))[0], torch.full((4, 1, 8, 8), -2.0))


def test_yaml_class_path(cifar_dir):
    from jsonargparse import ArgumentParser
    from lightning import LightningDataModule

    parser = ArgumentParser()
    parser.add_subclass_arguments(LightningDataModule, "data")
    config = parser.parse_string(
        f"data:\n  class_path: lightning_epe.data.CIFAR10DataModule\n"
        f"  init_args:\n    data_dir: {cifar_dir}\n    batch_size: 32\n    val_fraction: 0.2\n")
    dm = parser.instantiate(config).data
    assert isinstance(dm, CIFAR10DataModule) and dm.batch_size == 32 and dm.val_fraction == 0.2


def test_trainer_runs_on_digits():
    import lightning as L

    class Linear(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))

        def training_step(self, batch, _):
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def validation_step(self, batch, _):
            self.log("loss", torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1]))

        test_step = validation_step

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = L.Trainer(fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(Linear(), DigitsDataModule())
    trainer.test(Linear(), DigitsDataModule(), verbose=False)


@pytest.mark.parametrize("cls, url", [(CIFAR10DataModule, "cifar-10-python.tar.gz"),
                                      (CIFAR100DataModule, "cifar-100-python.tar.gz")])
def test_no_network_is_a_clear_error_naming_what_was_tried_and_the_offline_alternatives(cls, url, tmp_path,
                                                                                        monkeypatch):
    import urllib.error
    import urllib.request

    from lightning_epe.data import DownloadError

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # what torchvision's download calls
    dm = cls(data_dir=tmp_path / "data", download=True)
    with pytest.raises(DownloadError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert isinstance(info.value, ConnectionError) and not isinstance(info.value, urllib.error.URLError)
    assert f"tried https://www.cs.toronto.edu/~kriz/{url}" in message  # what was tried
    assert str((tmp_path / "data").resolve()) in message and "looked for first" in message  # where it looked
    assert "Temporary failure in name resolution" in message  # why
    for alternative in ("download=False", "NPZDataModule", "DigitsDataModule"):  # the offline alternatives
        assert alternative in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_no_network_through_the_command_line_is_one_error_line(tmp_path, monkeypatch, capsys):
    import urllib.error
    import urllib.request
    from pathlib import Path

    from lightning_epe.cli import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "nb201_cifar10.yaml"
    code = main(["search", "--config", str(recipe), "--data.init_args.download", "true", "--results_dir",
                 str(tmp_path / "results"), "--data.init_args.data_dir", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("lightning-epe search: error: could not download CIFAR-10: tried https://") and \
        "Traceback" not in err and "DigitsDataModule" in err
    assert not (tmp_path / "results" / "scores.jsonl").exists()
