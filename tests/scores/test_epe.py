import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_epe.scores import epe_score, get_score, list_scores
from lightning_epe.spaces import NB201Space
from tests.conftest import official_net

TAGS = ["best_c10", "resnet", "pool_1x1", "all_skip", "all_none"]
#: Relative tolerance against the official values per cell: 4x (rounded up, at least 1e-6) the largest deviation
#: measured over 16 emulated CPUs (1 and 2 threads, torch/MKL/oneDNN kernel settings, inputs and weights times
#: 1 + 1e-7 N(0, 1)) by ``python bench/cpu_spread.py run --family epe`` (docs/benchmarks/cpu_spread_epe.md):
#: best_c10 1.1e-3 (120 classes 1.5e-3), resnet 2.8e-4, pool_1x1 9e-6 (1.2e-5), all_skip 1.1e-6 (1.3e-6). The deep
#: convolutional cells move most: their input gradients are rounded differently by each CPU's convolution kernels.
OFFICIAL_REL = {"best_c10": 6e-3, "resnet": 1.2e-3, "pool_1x1": 5e-5, "all_skip": 6e-6, "all_none": 1e-6}


@pytest.mark.parametrize("tag", TAGS)
@pytest.mark.parametrize("class_count, key", [("official", "epe"), (120, "epe_if_n_classes_120")])
def test_reference_path_matches_official_vectors(reference, tag, class_count, key):
    expected = reference["expected"][tag][key]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the all-none cell must not flood warnings
        ours = epe_score(official_net(reference, tag), reference["x"], reference["y"],
                         class_count=class_count, reference=True)
    if math.isnan(expected):
        assert math.isnan(ours)
    else:
        assert abs(ours - expected) / abs(expected) <= OFFICIAL_REL[tag]


@pytest.mark.parametrize("tag", ["resnet", "all_skip"])
def test_default_path_agrees_with_reference(reference, tag):
    net = official_net(reference, tag)
    fast = epe_score(net, reference["x"], reference["y"])
    exact = epe_score(net, reference["x"], reference["y"], reference=True)
    assert abs(fast - exact) / abs(exact) <= 1e-9


def tiny_net(seed=0, classes=4):
    torch.manual_seed(seed)
    return NB201Space().build(NB201Space().arch(9930), num_classes=classes, C=4, N=1)


# The no-side-effect rule for every score (epe with both paths) is tested in test_proxies.py.


def test_score_is_computed_in_train_mode_whatever_the_mode(tiny_batch):
    x, y = tiny_batch
    net = tiny_net()
    train_score = epe_score(net, x, y)
    net.eval()
    assert epe_score(net, x, y) == train_score


def test_works_under_no_grad_and_refuses_inference_mode(tiny_batch):
    x, y = tiny_batch
    net = tiny_net()
    plain = epe_score(net, x, y)
    with torch.no_grad():
        assert epe_score(net, x, y) == plain
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        epe_score(net, x, y)


def test_logits_or_tuple_and_any_image_size_and_channels():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3))
    x = torch.randn(12, 1, 16, 16)
    y = torch.arange(12) % 3
    score = epe_score(plain, x, y)
    wrapped = nn.Module()
    wrapped.forward = lambda t: (None, plain(t))
    wrapped.inner = plain
    assert epe_score(wrapped, x, y) == score
    assert epe_score(plain, x, y, reference=True) == pytest.approx(score, rel=1e-9)


def test_scale_and_sign_invariance_of_rows_via_linear_model():
    # J rows of a linear model are constant per sample, so all correlations are 1: E_c = n_c^2 log(1+k)
    model = nn.Linear(5, 2)
    x = torch.randn(6, 5)
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    expected = (9 + 4 + 1) * math.log(1 + 1e-5)
    assert epe_score(model, x, y) == pytest.approx(expected, rel=1e-9)
    assert epe_score(model, x, y, reference=True) == pytest.approx(expected, rel=1e-9)


def independent_epe(jacobian: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """A plain re-derivation of the spec, for small hand-made cases."""
    scores = []
    for c in dict.fromkeys(labels.tolist()):
        rows = jacobian[labels == c].astype(np.float64)
        if len(rows) == 1:
            if classes > 100:
                continue
            scores.append(math.log(1 + 1e-5))
            continue
        z = (rows - rows.mean(1, keepdims=True)) / rows.std(1, keepdims=True)
        r = np.clip(z @ z.T / rows.shape[1], -1, 1)
        e = np.log(np.abs(r) + 1e-5).sum()
        scores.append(e / len(rows) if classes > 100 else e)
    if classes <= 100:
        return sum(abs(s) for s in scores)
    return sum(abs(a - b) for a in scores for b in scores) / len(scores)


class FixedJacobian(nn.Module):
    """A model whose input gradient is a chosen matrix: logits = sum(x * W) per sample."""

    def __init__(self, jacobian, classes):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(jacobian, dtype=torch.float32))
        self.classes = classes

    def forward(self, x):
        out = (x * self.w).sum(1, keepdim=True)
        return nn.functional.pad(out, (0, self.classes - 1))  # zero logits: the gradient stays W exactly


@pytest.mark.parametrize("classes", [4, 120])
@pytest.mark.parametrize("reference_path", [False, True])
def test_edge_cases_against_independent_formula(classes, reference_path):
    rng = np.random.default_rng(0)
    jac = rng.normal(size=(9, 7)).astype(np.float32)
    # class 3 has one sample; class 1 is absent; labels are int32 to test dtype handling
    labels = np.array([0, 2, 0, 2, 3, 0, 2, 0, 2])
    model = FixedJacobian(jac, classes)
    got = epe_score(model, torch.zeros(9, 7), torch.tensor(labels, dtype=torch.int32),
                    class_count="true", reference=reference_path)
    assert got == pytest.approx(independent_epe(jac, labels, classes), rel=1e-9)


@pytest.mark.parametrize("reference_path", [False, True])
def test_zero_or_constant_gradient_row_gives_nan(reference_path):
    jac = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    jac[2] = 3.0  # constant row: zero variance
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = epe_score(FixedJacobian(jac, 2), torch.zeros(6, 5), torch.tensor([0, 1, 0, 1, 0, 1]),
                        reference=reference_path)
    assert math.isnan(got)


def test_class_count_modes(tiny_batch):
    x, y = tiny_batch
    net = tiny_net(classes=4)
    assert epe_score(net, x, y, class_count="true") == epe_score(net, x, y, class_count=4)
    assert epe_score(net, x, y, class_count="official") == epe_score(net, x, y, class_count=10)
    assert epe_score(net, x, y, class_count=101) != epe_score(net, x, y, class_count=100)
    with pytest.raises(ValueError, match="out of range"):
        epe_score(net, x, y + 4, class_count="true")
    with pytest.raises(ValueError, match="class_count must be"):
        epe_score(net, x, y, class_count="all")


@pytest.mark.parametrize("make_targets, error, message", [
    (lambda y: y.float(), TypeError, "integer class labels"),
    (lambda y: y[:-1], ValueError, "shape"),
    (lambda y: y[:, None], ValueError, "shape"),
    (lambda y: y - 1, ValueError, ">= 0"),
])
def test_bad_targets_raise(tiny_batch, make_targets, error, message):
    x, y = tiny_batch
    with pytest.raises(error, match=message):
        epe_score(tiny_net(), x, make_targets(y))


def test_bad_inputs_raise(tiny_batch):
    x, y = tiny_batch
    net = tiny_net()
    with pytest.raises(ValueError, match="NaN or inf"):
        epe_score(net, x.clone().index_fill_(0, torch.tensor([0]), float("nan")), y)
    with pytest.raises(ValueError, match="at least 2"):
        epe_score(net, x[:1], y[:1])
    with pytest.raises(TypeError, match="floating-point"):
        epe_score(net, (x * 10).to(torch.uint8), y)


def test_labels_of_any_integer_dtype_and_shape_b(tiny_batch):
    x, y = tiny_batch
    net = tiny_net()
    base = epe_score(net, x, y)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        assert epe_score(net, x, y.to(dtype)) == base


def test_registry():
    assert "epe" in list_scores()
    assert get_score("epe") is epe_score
    with pytest.raises(ValueError, match="available scores: .*epe"):
        get_score("epee")
