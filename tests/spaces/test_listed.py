"""ListSpace: a plain list or dict of candidates (factories, timm names, name -> factory)."""
import functools
import json

import pytest
import torch
from torch import nn

from lightning_epe.search import ArchitectureSearch
from lightning_epe.spaces import ListSpace


def small_cnn(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))


def wide_cnn(num_classes=10, in_channels=3, width=16):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))


class NoArgs(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))

    def forward(self, x):
        return self.net(x)


def test_names_from_functions_classes_timm_names_and_dicts():
    space = ListSpace([small_cnn, NoArgs, "resnet10t", functools.partial(wide_cnn, width=8)])
    assert list(space) == ["small_cnn", "NoArgs", "resnet10t", "wide_cnn"]
    assert len(space) == 4 and space.parse("NoArgs") == "NoArgs"
    assert list(ListSpace({"a": small_cnn, "b": small_cnn, "r": "resnet10t"})) == ["a", "b", "r"]
    assert ListSpace({"r": "resnet10t"}).describe("r") == "resnet10t"
    assert space.sample(3, seed=1) == space.sample(3, seed=1)
    with pytest.raises(ValueError, match="unknown candidate 'nope'; this list has: small_cnn, NoArgs"):
        space.parse("nope")


def test_build_passes_what_each_factory_takes():
    space = ListSpace([small_cnn, wide_cnn, NoArgs, "resnet10t"])
    assert space.build("small_cnn", num_classes=4, in_channels=3)(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    assert space.build("wide_cnn", num_classes=5, in_channels=1)(torch.randn(2, 1, 8, 8)).shape == (2, 5)
    assert space.build("wide_cnn", num_classes=5, width=3)[0].out_channels == 3  # build_options go through
    assert space.build("NoArgs", num_classes=4)(torch.randn(2, 3, 8, 8)).shape == (2, 4)
    assert space.build("resnet10t", num_classes=3, in_channels=1)(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    assert space.create_args("resnet10t") == {"model_name": "resnet10t"}
    assert space.create_args("small_cnn") is None


@pytest.mark.parametrize("models, error, message", [
    ([], ValueError, "at least one candidate"),
    ([small_cnn, small_cnn], ValueError, "two candidates are named 'small_cnn': give them names with a dict"),
    ([lambda: NoArgs(), lambda: NoArgs()], ValueError, "two candidates are named '<lambda>'"),
    ([NoArgs()], TypeError, "an nn.Module instance cannot be re-initialised"),
    ([3], TypeError, "neither a factory .* nor a timm model name"),
    (["resnet181"], ValueError, "Closest known names: .*resnet18"),
    (["no_such_package.nets.small"], ValueError, "neither a timm model name nor an importable dotted path"),
    ({"": small_cnn}, ValueError, "non-empty string"),
    (5, TypeError, "a list of candidates or a dict"),
])
def test_bad_lists_say_what_is_accepted(models, error, message):
    with pytest.raises(error, match=message):
        ListSpace(models)


def test_a_factory_returning_no_module_fails_with_its_name():
    space = ListSpace({"bad": lambda: "not a network"})
    with pytest.raises(TypeError, match="candidate 'bad': its factory returned str, not an nn.Module"):
        space.build("bad")


def test_a_dotted_path_names_a_factory():
    space = ListSpace(["tests.spaces.test_listed.small_cnn"])
    assert list(space) == ["tests.spaces.test_listed.small_cnn"]
    assert isinstance(space.build("tests.spaces.test_listed.small_cnn"), nn.Sequential)


def test_architecture_search_takes_a_plain_list_and_scores_each_once(tiny_data):
    search = ArchitectureSearch(space=[small_cnn, wide_cnn, NoArgs], score="epe", progress=False)
    assert isinstance(search.space, ListSpace)
    assert (search.search_strategy, search.budget) == ("exhaustive", None)
    records = search.run(tiny_data).records
    assert [r["candidate"] for r in records] == ["small_cnn", "wide_cnn", "NoArgs"]
    assert all(r["score"] is not None for r in records)
    # told otherwise, the list is sampled as any space
    search = ArchitectureSearch(space={"s": small_cnn, "w": wide_cnn}, budget=5, search_strategy="random",
                                progress=False)
    assert (search.search_strategy, search.budget) == ("random", 5)


def test_a_list_space_in_yaml(tmp_path, capsys):
    from lightning_epe.cli import main

    assert main(["score", "--config", "quickstart", "--search.space", '["tests.spaces.test_listed.small_cnn", '
                 '"tests.spaces.test_listed.wide_cnn"]', "--search.batch_size", "16", "--search.progress", "false",
                 "--search.build_options", "{}", "--search.search_strategy", "exhaustive", "--search.budget", "null",
                 "--results_dir", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["candidate"] for r in records] == ["tests.spaces.test_listed.small_cnn",
                                                 "tests.spaces.test_listed.wide_cnn"]
