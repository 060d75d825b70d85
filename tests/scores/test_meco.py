"""MeCo: parity with the official code (HamsterMimi/MeCo@0d830dd) through the nasbench2 module tree,
the clean mode's counting, any network, options and errors."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_epe.scores import get_score, score_info
from lightning_epe.scores.meco import meco_features, meco_from_features, meco_score, nb201_meco_multiplicity
from lightning_epe.spaces import NB201Space
from tests.conftest import official_net

TAGS = ["best_c10", "resnet", "pool_1x1", "all_skip", "all_none"]


def tiny_net(seed=0, classes=4, arch=9930):
    torch.manual_seed(seed)
    return NB201Space().build(NB201Space().arch(arch), num_classes=classes, C=4, N=1)


def term(feature: np.ndarray) -> float:
    """An independent MeCo term: min eigenvalue of the zeroed channel correlations (float64)."""
    rows = feature.reshape(feature.shape[0], -1).astype(np.float64)
    with np.errstate(all="ignore"):
        corr = np.corrcoef(rows)
    corr[~np.isfinite(corr)] = 0
    return float(np.linalg.eigvalsh(corr).min())


# ---------------------------------------------------------------- official test vectors

# Each term is the smallest eigenvalue of a float32 correlation matrix; its rounding depends on the
# CPU's kernels (MKL's eigensolver, the convolutions before it), which moves single eigenvalues by
# ~1e-7..1e-6 absolute. Tolerances: 4x the largest relative deviation measured over emulated CPUs,
# rounded up (`python bench/cpu_spread.py run`, docs/benchmarks/cpu_spread.md: 1 and 2 threads,
# torch/MKL/oneDNN kernel settings, inputs and weights times 1 + 1e-7 N(0, 1); max of |ours - official|
# and the spread of ours, both batch sizes). Measured: best_c10 2.2e-7, resnet 4.6e-7, pool_1x1 2.9e-6,
# all_skip 7.4e-6, all_none 9.2e-6 (a sum of 0.29: the largest relative share). A miscounted tensor
# would be off by >= 1e-2.
PARITY_RTOL = {"best_c10": 9e-7, "resnet": 2e-6, "pool_1x1": 2e-5, "all_skip": 3e-5, "all_none": 4e-5}


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("batch, key", [(1, "meco"), (64, "meco_if_batch64")])
def test_official_mode_matches_official_vectors(reference, sota, tag, batch, key):
    assert sota[tag]["arch_str"] == reference["expected"][tag]["arch_str"]
    expected = sota[tag]["meco"][key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = meco_score(official_net(reference, tag), reference["x"][:batch], mode="official")
    assert abs(got - expected) <= PARITY_RTOL[tag] * abs(expected)


class Nasbench2Like(nn.Module):
    """The official nasbench2 module tree around OUR NB201 modules (the same objects): ``stem.net``,
    ``stack_cell{1,2,3}`` Sequentials, ``reduction{1,2}``, ``top`` (lastact, global pooling, flatten),
    ``classifier``; the root returns the logits. Hooking every module of it is what the official code does."""

    def __init__(self, net):
        super().__init__()
        cells = list(net.cells)
        n = (len(cells) - 2) // 3
        self.stem = nn.Module()
        self.stem.net = net.stem
        self.stem.forward = lambda x: self.stem.net(x)
        self.stack_cell1 = nn.Sequential(*cells[:n])
        self.reduction1 = cells[n]
        self.stack_cell2 = nn.Sequential(*cells[n + 1:2 * n + 1])
        self.reduction2 = cells[2 * n + 1]
        self.stack_cell3 = nn.Sequential(*cells[2 * n + 2:])
        self.top = nn.Module()
        self.top.lastact = net.lastact
        self.top.global_pooling = net.global_pooling
        self.top.forward = lambda x: self.top.global_pooling(self.top.lastact(x)).flatten(1)
        self.classifier = net.classifier

    def forward(self, x):
        x = self.reduction1(self.stack_cell1(self.stem(x)))
        x = self.reduction2(self.stack_cell2(x))
        return self.classifier(self.top(self.stack_cell3(x)))


@pytest.mark.parametrize("arch", [9930, 0, 15624, 1234])
@pytest.mark.parametrize("batch", [1, 3])
def test_nb201_counting_equals_hooking_the_nasbench2_tree(arch, batch):
    # no shared data needed: the multiplicity map must give exactly what hooking every module of the
    # nasbench2 tree gives (same tensors, same order, the same float32 sum)
    net = tiny_net(arch=arch)
    x = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(arch))
    wrapped = Nasbench2Like(net)
    assert torch.equal(net(x)[1], wrapped(x))
    assert meco_score(net, x, mode="official") == meco_score(wrapped, x, mode="official")


def test_nb201_multiplicity_map():
    net = NB201Space().build(NB201Space().arch(9930), C=4, N=2)
    counts = nb201_meco_multiplicity(net)
    assert counts == {net.stem: 2, net.global_pooling: 2, net.cells[1]: 2, net.cells[4]: 2, net.cells[7]: 2}
    with pytest.raises(ValueError, match="not an NB201 TinyNetwork"):
        nb201_meco_multiplicity(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_official_mode_on_autodl_tree_without_emulation_would_fail():
    # the official hook on the AutoDL root output (features, logits) at batch 1 reads a 1-row tensor;
    # a wrapper that is not a TinyNetwork gets the literal behaviour and a clear error
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_net()

        def forward(self, x):
            return self.net(x)

    with pytest.raises(ValueError, match="fewer than 2 rows.*official code fails.*mode='clean'"):
        meco_score(Wrapper(), torch.randn(1, 3, 8, 8), mode="official")
    assert math.isfinite(meco_score(Wrapper(), torch.randn(1, 3, 8, 8), mode="clean"))


# ---------------------------------------------------------------- definition


def test_clean_mode_by_hand():
    torch.manual_seed(0)
    conv, relu = nn.Conv2d(3, 5, 3), nn.ReLU()
    net = nn.Sequential(conv, relu, nn.Identity())  # Sequential and Identity return the ReLU output again
    x = torch.randn(2, 3, 9, 9)
    a = conv(x)
    expected = term(a[0].detach().numpy()) + term(relu(a)[0].detach().numpy())
    assert meco_score(net, x) == pytest.approx(expected, rel=1e-5, abs=1e-6)
    # official mode counts what each of the 4 modules returns (root, conv, relu, identity)
    official = term(a[0].detach().numpy()) + 3 * term(relu(a)[0].detach().numpy())
    assert meco_score(net, x, mode="official") == pytest.approx(official, rel=1e-5, abs=1e-6)


def test_clean_mode_counts_equal_values_once_and_in_place_activations_twice():
    torch.manual_seed(0)
    base = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU())

    class AddZero(nn.Module):
        def forward(self, t):
            return t + 0  # a new tensor with the same values

    x = torch.randn(4, 3, 10, 10)
    score = meco_score(base, x)
    assert meco_score(nn.Sequential(base, AddZero(), nn.Identity()), x) == score
    in_place = nn.Sequential(base[0], base[1], nn.ReLU(inplace=True))
    assert meco_score(in_place, x) == score  # BN output before and after the in-place ReLU: both seen


def test_only_sample_zero_is_read_without_batchnorm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.GELU(), nn.Conv2d(6, 6, 3))
    x = torch.randn(5, 3, 12, 12)
    for mode in ("clean", "official"):
        # the conv kernels of a batch of 1 and of 5 round differently: equal to float32 rounding
        assert meco_score(net, x, mode=mode) == pytest.approx(meco_score(net, x[:1], mode=mode), rel=1e-5)
        other = x.clone()
        other[1:] = torch.randn(4, 3, 12, 12)
        assert meco_score(net, other, mode=mode) == meco_score(net, x, mode=mode)


def test_identity_cells_add_nothing_in_clean_mode(reference):
    # resnet tag: every InferCell is the identity; clean mode counts its output once, official per hook
    net = official_net(reference, "resnet")
    x = reference["x"][:1]
    clean = meco_score(net, x)
    assert 0 < clean < meco_score(net, x, mode="official")


def test_meco_from_features_counts_repeats_and_checks_rows():
    torch.manual_seed(0)
    f = torch.randn(4, 6, 6)
    g = torch.randn(3, 5, 5)
    one = meco_from_features([f], mode="official")
    assert meco_from_features([f, f, g], mode="official") == pytest.approx(2 * one + meco_from_features([g]),
                                                                             rel=1e-5)
    assert one == pytest.approx(term(f.numpy()), rel=1e-5)
    assert meco_from_features([f], mode="clean") == pytest.approx(term(f.numpy()), rel=1e-5)
    assert meco_from_features([]) == 0.0
    assert meco_from_features([torch.zeros(4, 3, 3), torch.randn(5, 1, 1)]) == 0.0  # zero matrices
    assert meco_from_features([torch.randn(1, 9)]) == 0.0  # clean: one row adds nothing
    with pytest.raises(ValueError, match="fewer than 2 rows"):
        meco_from_features([torch.randn(1, 9)], mode="official")
    with pytest.raises(ValueError, match="at least 1 dimension"):
        meco_from_features([torch.tensor(1.0)])


def test_meco_features_records_for_a_fused_pass(tiny_batch):
    x, _ = tiny_batch
    net = tiny_net()
    from lightning_epe.scores._isolation import scoring_context

    for mode in ("clean", "official"):
        with scoring_context(net, torch.device("cpu")), meco_features(net, mode) as rec, torch.no_grad():
            net(x)
        assert meco_from_features(rec.features, mode=mode) == meco_score(net, x, mode=mode)
    assert all(len(m._forward_hooks) == 0 for m in net.modules())


def test_score_info_and_registry():
    info = score_info("meco")
    assert info.fn is meco_score and not info.needs_labels and info.data_dependent
    assert get_score("meco") is meco_score


# ---------------------------------------------------------------- any network


@pytest.mark.parametrize("family", ["resnet10t", "mobilenetv3_small_050", "test_efficientnet", "convnext_atto"])
def test_timm_models(family):
    pytest.importorskip("timm")
    from lightning_epe.spaces import TimmSpace

    torch.manual_seed(0)
    net = TimmSpace([family]).build(family, num_classes=4)  # SiLU/Hardswish/GELU, LayerNorm, BN
    x = torch.randn(4, 3, 32, 32)
    clean = meco_score(net, x)
    assert isinstance(clean, float) and math.isfinite(clean) and clean > 0
    assert math.isfinite(meco_score(net, x, mode="official"))


def test_one_sample_through_a_batchnorm_on_vectors_says_what_to_do():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="pass a batch of B >= 2"):
        meco_score(net, torch.randn(1, 3, 8, 8))
    assert math.isfinite(meco_score(net, torch.randn(2, 3, 8, 8)))


def test_official_mode_literal_output_rules():
    torch.manual_seed(0)
    single = nn.Sequential(nn.Conv2d(3, 1, 3))  # one channel: the official eig fails
    with pytest.raises(ValueError, match="official code fails"):
        meco_score(single, torch.randn(2, 3, 6, 6), mode="official")
    assert meco_score(single, torch.randn(2, 3, 6, 6)) == 0.0  # clean: a 1-channel map has no correlation

    class Dict(nn.Module):
        def forward(self, t):
            return {"logits": t.mean((2, 3))}

    with pytest.raises(ValueError, match="returned a dict with keys"):
        meco_score(Dict(), torch.randn(2, 3, 6, 6), mode="official")


def test_networks_without_feature_maps():
    mlp = nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="no feature map"):
        meco_score(mlp, x)
    assert meco_score(mlp, x, mode="official") == 0.0  # every (F, 1) correlation is NaN -> 0


def test_no_side_effects(tiny_batch):
    x, y = tiny_batch
    net = tiny_net()
    net(x)[1].sum().backward()
    net.cells[0].requires_grad_(False)
    net.eval()
    net.stem.train()
    grads = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
    flags = [p.requires_grad for p in net.parameters()]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    rng = torch.get_rng_state()
    for mode in ("clean", "official"):
        meco_score(net, x, y, mode=mode)
    assert all((a is None and p.grad is None) or torch.equal(a, p.grad) for a, p in zip(grads, net.parameters()))
    assert flags == [p.requires_grad for p in net.parameters()]
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert modes == [m.training for m in net.modules()]
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    assert torch.equal(rng, torch.get_rng_state())


def test_train_mode_whatever_the_mode_and_no_grad(tiny_batch):
    x, _ = tiny_batch
    net = tiny_net()
    score = meco_score(net, x)
    net.eval()
    assert meco_score(net, x) == score
    with torch.no_grad():
        assert meco_score(net, x) == score
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        meco_score(net, x)


# ---------------------------------------------------------------- bad input


def test_refuses_bad_inputs_and_options(tiny_batch):
    x, _ = tiny_batch
    net = tiny_net()
    with pytest.raises(ValueError, match="mode must be 'clean' or 'official'"):
        meco_score(net, x, mode="fast")
    with pytest.raises(TypeError, match="torch.Tensor"):
        meco_score(net, x.numpy())
    with pytest.raises(TypeError, match="floating-point"):
        meco_score(net, (x * 10).long())
    with pytest.raises(ValueError, match="batched"):
        meco_score(net, x[0, 0, 0])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        meco_score(net, bad)


def test_meco_official_is_meco_in_official_mode_under_a_name_of_its_own(tiny_batch):
    from lightning_epe.scores.ensemble import ensemble_scores

    x, y = tiny_batch
    torch.manual_seed(0)
    net = NB201Space().build("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|skip_connect~2|",
                             num_classes=10, C=4, N=1)
    official = meco_score(net, x[:2], mode="official")
    assert get_score("meco_official")(net, x[:2]) == official != meco_score(net, x[:2])
    both = ensemble_scores(net, x, y, members=["meco", "meco_official"], member_options={
        "meco": {"samples": 2}, "meco_official": {"samples": 2}})
    assert both == {"meco": meco_score(net, x[:2]), "meco_official": official}
