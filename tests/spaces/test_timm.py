import random

import pytest
import torch

from lightning_epe.scores import epe_score
from lightning_epe.search import ArchitectureSearch
from lightning_epe.spaces import TimmSpace


def test_names_wildcards_and_grid():
    space = TimmSpace(["resnet18", "mobilenetv3_small_0*"], grid={"drop_rate": [0.0, 0.2]},
                      exclude=["*_075"])
    names = {TimmSpace.split(c)[0] for c in space}
    assert "resnet18" in names and "mobilenetv3_small_050" in names and "mobilenetv3_small_075" not in names
    assert len(space) == 2 * len(names)
    assert TimmSpace.split('resnet18 {"drop_rate": 0.2}') == ("resnet18", {"drop_rate": 0.2})
    assert space.sample(5, seed=1) == space.sample(5, seed=1)
    assert space.mutate(space.candidates[0], random.Random(0)) != space.candidates[0]


def test_unknown_name_lists_close_names():
    with pytest.raises(ValueError, match="Closest known names: .*resnet18"):
        TimmSpace(["resnet181"])
    with pytest.raises(ValueError, match="no timm model matches"):
        TimmSpace(["nothing_like_this*"])


def test_build_untrained_with_data_shape_and_score():
    space = TimmSpace(["resnet10t"])
    torch.manual_seed(0)
    net = space.build("resnet10t", num_classes=4, in_channels=1)
    assert net(torch.randn(2, 1, 32, 32)).shape == (2, 4)
    score = epe_score(net, torch.randn(8, 1, 32, 32), torch.arange(8) % 4)
    assert score > 0


def test_search_over_timm_records_failures_and_goes_on(tiny_data):
    # vit_tiny expects 224x224 inputs: it fails on 8x8 images and is recorded, the others are scored
    space = TimmSpace(["vit_tiny_patch16_224", "resnet10t", "lcnet_050"])
    result = ArchitectureSearch(space, search_strategy="exhaustive", budget=None, accelerator="cpu",
                                progress=False).run(tiny_data)
    by = {r["candidate"]: r for r in result.records}
    assert by["vit_tiny_patch16_224"]["error"] is not None and by["vit_tiny_patch16_224"]["score"] is None
    assert by["resnet10t"]["error"] is None and by["lcnet_050"]["error"] is None
    assert result.best["candidate"] in ("resnet10t", "lcnet_050")


def test_dropout_and_drop_path_are_off_while_scoring_and_back_for_training():
    space = TimmSpace(["resnet10t"], grid={"drop_rate": [0.5], "drop_path_rate": [0.3]})
    torch.manual_seed(0)
    net = space.build(space.candidates[0], num_classes=4)
    torch.manual_seed(0)
    plain = TimmSpace(["resnet10t"]).build("resnet10t", num_classes=4)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    scores = {epe_score(net, x, y) for _ in range(2)}
    assert scores == {epe_score(plain, x, y)}  # deterministic, as if there were no dropout
    net.train()
    torch.manual_seed(1)
    a = net(x)
    torch.manual_seed(2)
    assert not torch.equal(a, net(x))  # dropout is active again for training
