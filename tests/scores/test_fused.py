"""score_many: shared passes give exactly the values of each score called alone."""
import math

import pytest
import torch

from lightning_epe.scores import ensemble_scores, get_score, score_many
from lightning_epe.spaces import NB201Space

ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def cell(arch=9930, seed=0):
    torch.manual_seed(seed)
    return NB201Space().build(arch, num_classes=4, C=4, N=1)


def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(16, 3, 8, 8, generator=g), torch.arange(16) % 4


def alone(net, x, y, names, options=None):
    options = options or {}
    return {n: get_score(n)(net, x, y, **options.get(n, {})) for n in names}


@pytest.mark.parametrize("names", [
    ("epe", "jacob_cov", "naswot"), ("epe", "jacob_cov"), ("naswot", "epe"), ("grad_norm", "snip"),
    ("epe", "jacob_cov", "naswot", "grad_norm", "snip", "synflow", "params", "flops"),
])
@pytest.mark.parametrize("arch", [9930, 1601, ALL_NONE])
def test_fused_equals_each_score_alone(names, arch):
    x, y = batch()
    net = cell(arch)
    fused = score_many(net, x, y, names)
    expected = alone(net, x, y, names)
    assert list(fused) == list(names)
    for name in names:  # bit for bit (NaN/-inf where alone gives them)
        assert fused[name] == expected[name] or (math.isnan(fused[name]) and math.isnan(expected[name])), name


def test_options_reach_their_score_and_unshareable_options_run_alone():
    x, y = batch()
    net = cell()
    options = {"epe": {"class_count": "true"}, "naswot": {"mode": "official"}}
    assert score_many(net, x, y, ("epe", "naswot", "jacob_cov"), options) == \
        alone(net, x, y, ("epe", "naswot", "jacob_cov"), options)
    reference = {"epe": {"reference": True}}
    assert score_many(net, x, y, ("epe", "jacob_cov"), reference) == alone(net, x, y, ("epe", "jacob_cov"), reference)


def test_the_ensemble_uses_the_fused_pass_and_equals_its_members():
    x, y = batch()
    net = cell()
    members = ("epe", "jacob_cov", "synflow", "params")  # any members: the fused pass equals the members alone
    assert ensemble_scores(net, x, y, members=members) == alone(net, x, y, members)


def test_fused_pass_runs_the_network_once_for_the_input_gradient_scores():
    x, y = batch()
    net = cell()
    calls = []
    net.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    score_many(net, x, y, ("epe", "jacob_cov", "naswot"))
    assert calls == [16]


def test_bad_requests_are_clear_errors():
    x, y = batch()
    net = cell()
    with pytest.raises(ValueError, match="not requested"):
        score_many(net, x, y, ("epe",), {"naswot": {"mode": "official"}})
    with pytest.raises(ValueError, match="ranks candidates"):
        score_many(net, x, y, ("ensemble",))
    with pytest.raises(ValueError, match="epe needs labels"):
        score_many(net, x, None, ("epe", "jacob_cov"))
    with pytest.raises(ValueError, match="unknown score"):
        score_many(net, x, y, ("epe", "nope"))


def test_samples_give_a_score_the_first_rows_of_the_batch():
    x, y = batch()
    net = cell()
    got = score_many(net, x, y, ("epe", "jacob_cov", "naswot"), {"naswot": {"samples": 8}})
    assert got["naswot"] == get_score("naswot")(net, x[:8])
    assert got["epe"] == get_score("epe")(net, x, y) and got["jacob_cov"] == get_score("jacob_cov")(net, x)
    with pytest.raises(ValueError, match="samples=32 but the batch has 16 rows"):
        score_many(net, x, y, ("naswot",), {"naswot": {"samples": 32}})
    with pytest.raises(ValueError, match="samples must be an int >= 1"):
        score_many(net, x, y, ("naswot",), {"naswot": {"samples": 0}})


def test_ensemble_members_are_fed_as_their_official_code_feeds_them():
    from lightning_epe.scores.ensemble import OFFICIAL_PROTOCOLS

    x, y = batch()
    net = cell()
    got = ensemble_scores(net, x, y, members=("meco", "swap", "epe"))
    assert OFFICIAL_PROTOCOLS["meco"] == {"samples": 1} and OFFICIAL_PROTOCOLS["swap"]["samples"] == 16
    assert got["meco"] == get_score("meco")(net, x[:1])  # MeCo: one image
    assert got["swap"] == get_score("swap")(net, x)  # SWAP's 16 > this batch of 16: the whole batch
    overridden = ensemble_scores(net, x, y, members=("meco", "epe"), member_options={"meco": {"samples": 4}})
    assert overridden["meco"] == get_score("meco")(net, x[:4])
    with pytest.raises(ValueError, match="not members"):
        ensemble_scores(net, x, y, members=("epe",), member_options={"meco": {}})


def test_a_member_the_network_cannot_take_its_official_batch_gets_the_whole_batch():
    from lightning_epe.spaces import TimmSpace

    torch.manual_seed(0)
    net = TimmSpace(["resnet10t"]).build("resnet10t", num_classes=4)  # 1x1 features through BatchNorm at 32x32
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    with pytest.raises(ValueError, match="pass a batch of B >= 2"):
        get_score("meco")(net, x[:1])  # MeCo's official single image
    got = ensemble_scores(net, x, y, members=("meco", "epe"))
    assert got == {"meco": get_score("meco")(net, x), "epe": get_score("epe")(net, x, y)}
