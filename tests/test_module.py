"""Training the winner: CandidateModule (reloadable from its checkpoint alone) or the user's own LightningModule."""
import json

import lightning as L
import pytest
import torch
import torchmetrics
from torch import nn

from lightning_epe import ArchitectureSearch, CandidateModule
from lightning_epe.cli import main
from lightning_epe.data import DigitsDataModule
from lightning_epe.spaces import ListSpace, NB201Space, TimmSpace

TRAINER = dict(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=2, logger=False,
               enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")


class MyModule(L.LightningModule):
    """A user's own module: takes any network; trains with Adam; logs test_acc."""

    built = []

    def __init__(self, net: nn.Module, lr: float = 1e-3):
        super().__init__()
        self.net, self.lr = net, lr
        self.acc = torchmetrics.Accuracy(task="multiclass", num_classes=10)
        MyModule.built.append(self)

    def forward(self, x):
        out = self.net(x)
        return out[-1] if isinstance(out, tuple) else out

    def training_step(self, batch, _):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def test_step(self, batch, _):
        self.acc(self(batch[0]), batch[1])
        self.log("test_acc", self.acc)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class NoTest(MyModule):
    test_step = L.LightningModule.test_step


def cnn(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


@pytest.fixture
def digits():
    return DigitsDataModule(batch_size=32)


def test_fit_trains_the_winner_in_the_users_module(digits):
    search = ArchitectureSearch(space={"cnn": cnn, "r10": "resnet10t"}, score="epe", batch_size=16, progress=False)
    MyModule.built.clear()
    metrics = search.fit(L.Trainer(**TRAINER), digits, module=MyModule, lr=0.01)
    module = MyModule.built[-1]
    assert 0.0 <= metrics["test_acc"] <= 1.0 and module.lr == 0.01
    winner = search.result.best["candidate"]
    assert type(module.net) is type(search.space.build(winner))
    # a factory receiving the network, and a module without test_step (trained, not tested)
    metrics = search.fit(L.Trainer(**TRAINER), digits, module=lambda net: NoTest(net, lr=0.1))
    assert metrics == {} and MyModule.built[-1].lr == 0.1
    with pytest.raises(TypeError, match="not a LightningModule"):
        search.fit(L.Trainer(**TRAINER), digits, module=lambda net: net)


def test_the_command_line_trains_with_module(tmp_path, capsys):
    assert main(["search", "--config", "quickstart", "--results_dir", str(tmp_path), "--search.budget", "2",
                 "--search.build_options", '{"C": 2, "N": 1}', "--search.batch_size", "16", "--search.progress",
                 "false", "--module", "tests.test_module.MyModule", "--module_options", '{"lr": 0.02}',
                 *[f"--trainer.{k}={v}" for k, v in TRAINER.items() if k != "accelerator"]]) == 0
    assert MyModule.built[-1].lr == 0.02
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0.0 <= summary["test_accuracy"] <= 1.0
    assert main(["fit", "--config", "quickstart", "--candidate", "9930", "--module", "tests.test_module.Nope",
                 "--search.build_options", '{"C": 2, "N": 1}']) == 1
    assert "not an importable dotted path" in capsys.readouterr().err


@pytest.mark.parametrize("space, candidate, options", [
    (NB201Space(), 9930, {"C": 2, "N": 1}),
    (TimmSpace(["resnet10t"], grid={"drop_path_rate": [0.0, 0.1]}), 'resnet10t {"drop_path_rate": 0.1}', {}),
    (ListSpace({"mine": "tests.test_module.cnn"}), "mine", {}),
])
def test_a_checkpoint_reloads_without_the_space(space, candidate, options, tmp_path):
    torch.manual_seed(0)
    module = CandidateModule(candidate, num_classes=10, space=space, build_options=options)
    trainer = L.Trainer(**{**TRAINER, "max_epochs": 1}, default_root_dir=tmp_path)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(tmp_path / "winner.ckpt")
    loaded = CandidateModule.load_from_checkpoint(tmp_path / "winner.ckpt", map_location="cpu")
    assert type(loaded.space) is type(space)
    x = torch.randn(2, 3, 32, 32)
    module.eval(), loaded.eval()
    assert torch.equal(module(x), loaded(x))


def test_a_space_that_cannot_describe_itself_stores_none():
    module = CandidateModule("f", space=ListSpace({"f": lambda num_classes=10: cnn(num_classes)}))
    assert module.hparams["space"] is None


def test_timm_winner_as_create_model_arguments():
    import timm

    args = TimmSpace.create_args('resnet10t {"drop_path_rate": 0.1}')
    assert args == {"model_name": "resnet10t", "drop_path_rate": 0.1}
    torch.manual_seed(0)
    ours = TimmSpace(["resnet10t"]).build('resnet10t {"drop_path_rate": 0.1}', num_classes=3)
    torch.manual_seed(0)
    theirs = timm.create_model(**args, num_classes=3)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    assert TimmSpace(candidates=['resnet10t {"drop_path_rate": 0.1}']).candidates == [
        'resnet10t {"drop_path_rate": 0.1}']
