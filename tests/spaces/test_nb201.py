import csv

import numpy as np
import pytest
import torch

from lightning_epe.spaces import NB201_OPS, NB201Space, parse_arch
from tests.conftest import NB201_CSV, require

space = NB201Space()


def test_every_index_matches_the_benchmark_table():
    rows = list(csv.DictReader(open(require(NB201_CSV), newline="")))
    assert len(space) == len(rows) == 15625
    for row in rows:
        i = int(row["index"])
        assert space.arch(i) == row["arch_str"]
        assert space.index(row["arch_str"]) == i


def test_arch_and_index_are_inverse():
    archs = {space.arch(i) for i in range(len(space))}
    assert len(archs) == 15625
    for i in (0, 1, 7777, 15624):
        assert space.index(space.arch(i)) == i


def test_sample_is_reproducible_and_in_range():
    a = space.sample(50, seed=3)
    assert a == space.sample(50, seed=3)
    assert a != space.sample(50, seed=4)
    assert all(0 <= i < 15625 for i in a)
    distinct = space.sample(15625, seed=0, replace=False)
    assert sorted(distinct) == list(range(15625))
    with pytest.raises(ValueError, match="distinct"):
        space.sample(15626, seed=0, replace=False)


@pytest.mark.parametrize("tag", ["best_c10", "resnet", "pool_1x1", "all_skip", "all_none"])
def test_state_dicts_of_official_networks_load_strictly_and_init_matches(reference, tag):
    expected = reference["expected"][tag]
    official = reference["state_dict"](tag)
    torch.manual_seed(0)
    net = space.build(expected["nb201_index"])
    assert list(net.state_dict()) == list(official)
    for key, value in net.state_dict().items():  # same construction order -> same initial weights
        assert torch.equal(value, official[key]), key
    net.load_state_dict(official, strict=True)


def test_build_accepts_index_arch_and_numeric_string_and_sizes():
    arch = space.arch(123)
    for candidate in (123, arch, "123"):
        torch.manual_seed(0)
        first = space.build(candidate, num_classes=7, C=4, N=1)
        assert first.classifier.out_features == 7
    features, logits = space.build(arch, num_classes=5, C=4, N=1, in_channels=1)(torch.randn(2, 1, 12, 12))
    assert logits.shape == (2, 5) and features.shape == (2, 16)


@pytest.mark.parametrize("arch, message", [
    ("", "node"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "expected 3"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 2 has 1 edge"),
    ("|conv5x5~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "valid ops: none"),
    ("|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     "must read input 0"),
    ("|nor_conv_3x3|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "not 'op~input'"),
    ("nor_conv_3x3~0+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "between '|'"),
])
def test_malformed_arch_strings_raise_clear_errors(arch, message):
    with pytest.raises(ValueError, match=message):
        parse_arch(arch)
    with pytest.raises(ValueError):
        space.build(arch)


@pytest.mark.parametrize("bad", [-1, 15625, 3.5, True, None])
def test_bad_indices_raise(bad):
    with pytest.raises(ValueError, match="0..15624"):
        space.arch(bad)


def test_ops_are_the_benchmark_ops():
    rows = list(csv.DictReader(open(require(NB201_CSV), newline="")))
    benchmark_ops = {edge.split("~")[0] for row in rows for edge in row["arch_str"].replace("+", "").split("|") if edge}
    assert set(NB201_OPS) == benchmark_ops
    assert np.unique([space.arch(i).count("~") for i in range(0, 15625, 97)]).tolist() == [6]


@pytest.mark.parametrize("text", ["--5", "5.0", "1e3", "abc", "-", ""])
def test_malformed_index_strings_say_what_a_candidate_looks_like(text):
    with pytest.raises(ValueError) as info:
        space.parse(text)
    message = str(info.value)
    assert "invalid literal" not in message
    assert ("neither an index (an int in 0..15624, e.g. '9930') nor an arch string (e.g. '|nor_conv_3x3~0|" in message)


def test_index_strings_and_numpy_integers():
    assert space.parse(" 9930 ") == space.parse("+9930") == space.parse(np.int64(9930)) == 9930
    with pytest.raises(ValueError, match="NB201 index -1 is out of range; valid indices are 0..15624"):
        space.parse("-1")
    net = space.build(np.int64(123), num_classes=np.int64(10), C=np.int32(4), N=np.int64(1), in_channels=np.int16(3))
    assert net.classifier.out_features == 10 and type(net.classifier.out_features) is int
