"""The zero-cost proxies besides EPE: naswot, jacob_cov, synflow, grad_norm, snip, params, flops."""
import copy
import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lightning_epe.scores import (
    ScoreInfo,
    available,
    flops_score,
    get_score,
    grad_norm_score,
    jacob_cov_score,
    list_scores,
    naswot_score,
    params_score,
    register_score,
    score_info,
    snip_score,
    synflow_score,
    unregister_score,
)
from lightning_epe.spaces import NB201Space

PROXIES = ["naswot", "jacob_cov", "synflow", "grad_norm", "snip", "params", "flops"]
# (needs_labels, data_dependent)
EXPECTED_INFO = {
    "epe": (True, True), "naswot": (False, True), "jacob_cov": (False, True), "synflow": (False, False),
    "grad_norm": (True, True), "snip": (True, True), "params": (False, False), "flops": (False, False),
    "zico": (True, True), "meco": (False, True), "az_expressivity": (False, True), "az_progressivity": (False, True),
    "az_trainability": (False, True), "swap": (False, True), "vkdnw": (False, True),
}

# ---------------------------------------------------------------- test vectors (official code)

_NETS = {}


def naswot_net(reference, tag):
    """The official NASWOT nets: num_classes=1, built under torch.manual_seed(0); every weight but
    the classifier equals the 10-class state dict of the test vectors."""
    if tag not in _NETS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = NB201Space().build(reference["expected"][tag]["arch_str"], num_classes=1)
        saved = reference["state_dict"](tag)
        for key, value in net.state_dict().items():
            if not key.startswith("classifier."):
                assert torch.equal(value, saved[key]), key
        _NETS[tag] = net
    return _NETS[tag]


SLOW = pytest.mark.slow  # the two largest cells: ~3x the time of the others
TAGS = [pytest.param("best_c10", marks=SLOW), "resnet", pytest.param("pool_1x1", marks=SLOW), "all_skip", "all_none"]


@pytest.mark.parametrize("tag", TAGS)
def test_naswot_official_mode_matches_test_vectors(reference, tag):
    expected = reference["expected"][tag]["naswot_v2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = naswot_score(naswot_net(reference, tag), reference["x"], mode="official")
    if math.isinf(expected):
        assert got == expected == -math.inf  # all-none cell: every sample has the same code
    else:
        assert abs(got - expected) <= 1e-6 * abs(expected)


#: jacob_cov's relative tolerance per cell: 4x (rounded up, at least 1e-6) the largest deviation measured over 16
#: emulated CPUs by ``python bench/cpu_spread.py run --family epe`` (docs/benchmarks/cpu_spread_epe.md): best_c10
#: 1.8e-5, resnet 4e-7, the others below 1e-7. (naswot, a log-determinant of binary codes, moved by 1.6e-8 at most:
#: its 1e-6 stands.)
JACOB_COV_REL = {"best_c10": 8e-5, "resnet": 2e-6}


@pytest.mark.parametrize("tag", TAGS)
def test_jacob_cov_matches_test_vectors(reference, tag):
    expected = reference["expected"][tag]["naswot_v1"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = jacob_cov_score(naswot_net(reference, tag), reference["x"])
    if math.isnan(expected):
        assert math.isnan(got)  # all-none cell: zero gradient rows
    else:
        assert abs(got - expected) <= JACOB_COV_REL.get(tag, 1e-6) * abs(expected)


def test_naswot_clean_mode_on_the_all_none_cell_is_minus_inf(reference):
    assert naswot_score(naswot_net(reference, "all_none"), reference["x"]) == -math.inf


# ---------------------------------------------------------------- naswot: modes and known values


def test_naswot_clean_mode_works_without_relu_where_official_gives_minus_inf():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=4)  # SiLU, no nn.ReLU
    x = torch.randn(8, 3, 32, 32)
    assert math.isfinite(naswot_score(model, x))
    assert naswot_score(model, x, mode="official") == -math.inf


ACTIVATIONS = ["relu", "relu6", "leaky_relu", "prelu", "elu", "celu", "selu", "gelu", "gelu_tanh", "quick_gelu",
               "silu", "mish", "hard_swish", "hard_mish"]


@pytest.mark.parametrize("name, hooked", [(n, True) for n in ACTIVATIONS]
                         + [(n, False) for n in ["sigmoid", "hard_sigmoid", "tanh", "identity"]])
def test_clean_mode_recognises_torch_and_timm_activations(name, hooked):
    timm_layers = pytest.importorskip("timm.layers")
    from lightning_epe.scores._hooks import is_activation

    assert is_activation(timm_layers.get_act_layer(name)()) is hooked


class ReLUWrapper(nn.Module):
    """Named like NB201's ReLUConvBN: the official matching hooks it *and* its inner ReLU."""

    def __init__(self):
        super().__init__()
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(x)


def test_naswot_hand_computed_kernel():
    # codes (x > 0): [1,0], [1,1], [0,0]; K = features - Hamming distance = [[2,1,1],[1,2,0],[1,0,2]]
    x = torch.tensor([[1.0, -1.0], [2.0, 3.0], [-1.0, -0.5]])
    det = 2 * (2 * 2 - 0) - 1 * (1 * 2 - 0) + 1 * (0 - 2 * 1)  # 4
    plain = nn.Sequential(nn.ReLU(), nn.Linear(2, 1))
    assert naswot_score(plain, x) == pytest.approx(math.log(det), rel=1e-12)
    assert naswot_score(plain, x, mode="official") == pytest.approx(math.log(det), rel=1e-12)
    wrapped = nn.Sequential(ReLUWrapper(), nn.Linear(2, 1))
    assert naswot_score(wrapped, x) == pytest.approx(math.log(det), rel=1e-12)  # hooked once
    # official: wrapper + inner ReLU, K doubles: log det(2K) = log 4 + 3 log 2
    assert naswot_score(wrapped, x, mode="official") == pytest.approx(math.log(det * 2 ** 3), rel=1e-12)


def tiny_net(seed=0, classes=4, arch=9930):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NB201Space().build(NB201Space().arch(arch), num_classes=classes, C=4, N=1)


def test_naswot_clean_mode_against_independent_formula(tiny_batch):
    x, _ = tiny_batch
    net = tiny_net()
    codes = []
    hooks = [m.register_forward_pre_hook(lambda m, a: codes.append((a[0] > 0).reshape(len(x), -1).double()))
             for m in net.modules() if type(m) is nn.ReLU]
    with torch.no_grad():
        net.train()(x)
    for h in hooks:
        h.remove()
    kernel = sum(c @ c.T + (1 - c) @ (1 - c).T for c in codes).numpy()
    net.eval()
    assert naswot_score(net, x) == pytest.approx(np.linalg.slogdet(kernel)[1], rel=1e-12)


def test_naswot_options_and_errors(tiny_batch):
    x, _ = tiny_batch
    gelu_net = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.GELU(), nn.Linear(16, 3))
    silu_net = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.SiLU(), nn.Linear(16, 3))
    silu_net.load_state_dict(gelu_net.state_dict())
    # GELU and SiLU have the sign of their input: same codes, same score
    assert naswot_score(gelu_net, x) == naswot_score(silu_net, x)
    assert naswot_score(gelu_net, x, activations=(nn.GELU,)) == naswot_score(gelu_net, x)
    assert naswot_score(gelu_net, x, activations=lambda m: isinstance(m, nn.GELU)) == naswot_score(gelu_net, x)

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(192, 3)

        def forward(self, t):
            return torch.relu(self.fc(t.flatten(1)))

    with pytest.raises(ValueError, match="no activation module"):
        naswot_score(Functional(), x)
    with pytest.raises(ValueError, match="mode must be"):
        naswot_score(gelu_net, x, mode="v2")
    with pytest.raises(ValueError, match="mode='clean'"):
        naswot_score(gelu_net, x, mode="official", activations=(nn.GELU,))
    with pytest.raises(TypeError, match="activations must be"):
        naswot_score(gelu_net, x, activations=(int,))
    with pytest.raises(ValueError, match="at least 2"):
        naswot_score(gelu_net, x[:1])


# ---------------------------------------------------------------- jacob_cov: known values


class FixedJacobian(nn.Module):
    """logits = sum(x * W) per sample: the input gradient of the summed logits is W exactly."""

    def __init__(self, jacobian):
        super().__init__()
        self.w = nn.Parameter(torch.as_tensor(jacobian, dtype=torch.float64))

    def forward(self, x):
        return (x * self.w).sum(1, keepdim=True)


def test_jacob_cov_against_official_formula():
    jac = np.random.default_rng(0).normal(size=(6, 9))
    v, _ = np.linalg.eig(np.corrcoef(jac))  # the official eigen-solver
    expected = -np.sum(np.log(v + 1e-5) + 1.0 / (v + 1e-5))
    got = jacob_cov_score(FixedJacobian(jac), torch.zeros(6, 9, dtype=torch.float64))
    assert got == pytest.approx(expected, rel=1e-10)


def test_jacob_cov_identical_rows_by_hand():
    # every row equal: R is all ones, eigenvalues B (once) and 0 (B - 1 times)
    b, k = 5, 1e-5
    jac = np.tile(np.arange(7.0), (b, 1))
    expected = -(math.log(b + k) + 1 / (b + k) + (b - 1) * (math.log(k) + 1 / k))
    got = jacob_cov_score(FixedJacobian(jac), torch.zeros(b, 7, dtype=torch.float64))
    assert got == pytest.approx(expected, rel=1e-9)


def test_jacob_cov_constant_row_is_nan_without_warnings():
    jac = np.random.default_rng(1).normal(size=(4, 5))
    jac[2] = 3.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(jacob_cov_score(FixedJacobian(jac), torch.zeros(4, 5, dtype=torch.float64)))


# ---------------------------------------------------------------- synflow: known values


def test_synflow_two_layer_net_by_hand():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
        net[0].bias.copy_(torch.tensor([0.5, -1.0]))
        net[2].weight.copy_(torch.tensor([[2.0, -1.0]]))
        net[2].bias.copy_(torch.tensor([0.3]))
    # |W1| 1 + |b1| = h = [3.5, 4.5]; R = |W2| h + |b2|
    # layer 2: |W2| * dR/dW2 = [2, 1] * h = [7, 4.5]                 -> 11.5
    # layer 1: |W1| * dR/dW1 = |W1| * (|W2|^T 1^T) = [[2, 4], [3, 0.5]] -> 9.5   (biases not measured)
    assert synflow_score(net, torch.randn(4, 2)) == pytest.approx(21.0, rel=1e-12)


def chain_synflow(weights):
    """Bias-free positive chain: R = 1^T |W_L| ... |W_1| 1 is linear in each layer, so each layer's
    sum of |w dR/dw| is R (Euler) and synflow = L * R; computed here in log-space-free float64."""
    v = np.ones(weights[0].shape[1])
    for w in weights:
        v = np.abs(w) @ v
    return len(weights) * v.sum()


def test_synflow_deep_net_does_not_overflow():
    torch.manual_seed(0)
    layers = []
    for _ in range(60):
        layers += [nn.Linear(64, 64, bias=False), nn.ReLU()]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(4.0)
    # the naive float32 flow overflows
    flow = torch.ones(1, 64)
    with torch.no_grad():
        for m in net:
            flow = flow @ m.weight.abs().T if isinstance(m, nn.Linear) else flow
    assert not torch.isfinite(flow.sum())
    got = synflow_score(net, torch.randn(2, 64))
    expected = chain_synflow([m.weight.detach().double().numpy() for m in net if isinstance(m, nn.Linear)])
    assert math.isfinite(got) and expected > 1e39
    assert got == pytest.approx(expected, rel=1e-9)


def test_synflow_bypasses_batchnorm_and_ignores_data(tiny_batch):
    x, _ = tiny_batch
    net = tiny_net()
    no_bn = copy.deepcopy(net)
    for parent in list(no_bn.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, child_name, nn.Identity())
    got = synflow_score(net, x)
    assert got > 0
    assert got == pytest.approx(synflow_score(no_bn, x), rel=1e-12)
    assert synflow_score(net, 3 * x[:1] + 1) == got  # only the sample shape matters


# ---------------------------------------------------------------- grad_norm and snip


def test_grad_norm_and_snip_of_a_linear_layer_by_formula():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 1])
    w, b = model.weight.detach().double().numpy(), model.bias.detach().double().numpy()
    logits = x.double().numpy() @ w.T + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    grad_w = (p - np.eye(3)[y.numpy()]).T @ x.double().numpy() / len(x)  # d mean CE / dW
    assert grad_norm_score(model, x, y) == pytest.approx(np.linalg.norm(grad_w), rel=1e-5)
    assert snip_score(model, x, y) == pytest.approx(np.abs(w * grad_w).sum(), rel=1e-5)


def test_grad_norm_and_snip_against_plain_autograd(tiny_batch):
    x, y = tiny_batch
    net = tiny_net()
    ref = copy.deepcopy(net).train()
    nn.functional.cross_entropy(ref(x)[1], y).backward()
    layers = [m for m in ref.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    expected_norm = sum(float(m.weight.grad.norm()) for m in layers)
    expected_snip = sum(float((m.weight.detach() * m.weight.grad).abs().sum()) for m in layers)
    net.eval()  # scored in train mode whatever the mode
    assert grad_norm_score(net, x, y) == pytest.approx(expected_norm, rel=1e-5)
    assert snip_score(net, x, y) == pytest.approx(expected_snip, rel=1e-5)


@pytest.mark.parametrize("score", [grad_norm_score, snip_score])
def test_gradient_proxies_need_valid_labels(tiny_batch, score):
    x, y = tiny_batch
    net = tiny_net()
    with pytest.raises(ValueError, match="needs labels"):
        score(net, x, None)
    with pytest.raises(ValueError, match="out of range"):
        score(net, x, y + 4)
    with pytest.raises(TypeError, match="integer class labels"):
        score(net, x, y.float())


# ---------------------------------------------------------------- params and flops


def test_params_by_hand():
    assert params_score(nn.Linear(3, 2)) == 8
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    net[0].requires_grad_(False)  # frozen: not trainable
    assert params_score(net, torch.zeros(2, 3), None) == 6
    shared = nn.Linear(4, 4)
    assert params_score(nn.Sequential(shared, shared)) == 20
    with pytest.raises(ValueError, match="lazy"):
        params_score(nn.LazyLinear(3))


def test_flops_by_hand():
    assert flops_score(nn.Linear(3, 2), torch.randn(5, 3)) == 2 * 3 * 2
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, 10))
    expected = 2 * (3 * 9) * 4 * 8 * 8 + 2 * 256 * 10  # conv MACs per output pixel, then the linear layer
    assert flops_score(conv, torch.randn(7, 3, 8, 8)) == expected
    assert flops_score(conv, torch.randn(1, 3, 8, 8)) == expected  # one sample, any batch size
    bn1d = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # a train-mode BatchNorm1d rejects one sample
    assert flops_score(bn1d, torch.randn(2, 3)) == 24
    with pytest.raises(TypeError, match="floating-point"):
        flops_score(conv, torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


# ---------------------------------------------------------------- registry and calling convention


def test_registry_names_and_info():
    assert set(EXPECTED_INFO) <= set(list_scores())
    for name, (labels, data) in EXPECTED_INFO.items():
        info = score_info(name)
        assert isinstance(info, ScoreInfo) and info.name == name and info.fn is get_score(name)
        assert (info.needs_labels, info.data_dependent) == (labels, data), name
        assert info.summary
    with pytest.raises(ValueError, match="available scores: .*synflow"):
        score_info("synflo")
    with pytest.raises(ValueError, match="Did you mean 'naswot'"):
        get_score("naswto")


def test_register_score_defaults_are_backward_compatible():
    try:
        fn = register_score("_test_only")(lambda model, inputs, targets: 0.0)
        assert get_score("_test_only") is fn
        assert (score_info("_test_only").needs_labels, score_info("_test_only").data_dependent) == (True, True)
        with pytest.raises(ValueError, match="already registered"):
            register_score("_test_only")(fn)
    finally:
        unregister_score("_test_only")
    assert "_test_only" not in list_scores()
    with pytest.raises(ValueError, match="unknown score '_test_only'"):
        unregister_score("_test_only")


def test_available_is_a_deprecated_alias_of_list_scores():
    with pytest.warns(DeprecationWarning, match="list_scores"):
        assert available() == list_scores()


def test_a_score_is_found_by_the_dotted_path_of_its_function():
    assert score_info("lightning_epe.scores.naswot.naswot_score").name == "naswot"
    with pytest.raises(ValueError, match="not a registered score"):
        score_info("lightning_epe.scores.jacob_cov.jacob_cov_from_jacobian")
    with pytest.raises(ValueError, match="unknown score"):
        score_info("no_such_module.score")


@pytest.mark.parametrize("name", PROXIES)
def test_every_proxy_accepts_the_calling_convention(tiny_batch, name):
    x, y = tiny_batch
    net = tiny_net()
    value = get_score(name)(net, x, y)
    assert isinstance(value, float) and math.isfinite(value)
    if not score_info(name).needs_labels:
        assert get_score(name)(net, x, None) == value
    if not score_info(name).data_dependent:
        assert get_score(name)(net, torch.randn_like(x[:3]), None) == value


# ---------------------------------------------------------------- no side effects


def state_of(model):
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "params": list(model.parameters()),
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "flags": [p.requires_grad for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "attrs": [sorted(vars(m)) for m in model.modules()],
    }


def assert_same_state(a, b):
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        va, vb = a["state"][k], b["state"][k]
        assert va.dtype == vb.dtype and va.device == vb.device and torch.equal(va, vb), k
    assert all(p is q for p, q in zip(a["params"], b["params"]))
    for ga, gb in zip(a["grads"], b["grads"]):
        assert (ga is None and gb is None) or torch.equal(ga, gb)
    for key in ("flags", "modes", "hooks", "attrs"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("name, options", [(n, {}) for n in list_scores()]
                         + [("naswot", {"mode": "official"}), ("epe", {"reference": True})])
def test_no_side_effects(tiny_batch, name, options):
    x, y = tiny_batch
    net = tiny_net()
    net(x)[1].sum().backward()  # some existing grads
    net.cells[0].requires_grad_(False)
    net.eval()
    net.stem.train()
    before = state_of(net)
    rng = torch.get_rng_state()
    get_score(name)(net, x, y, **options)
    assert_same_state(before, state_of(net))
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("name", [p for p in PROXIES if p != "params"])  # params runs no forward
def test_no_side_effects_when_the_forward_fails(tiny_batch, name):
    x, y = tiny_batch
    net = tiny_net()
    net.classifier.register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    before = state_of(net)
    with pytest.raises(RuntimeError, match="boom"):
        get_score(name)(net, x, y)
    # the failing hook is the test's own: it stays, and everything else is as before
    assert_same_state(before, state_of(net))


@pytest.mark.parametrize("family", ["resnet10t", "mobilenetv3_small_050", "test_efficientnet", "convnext_atto"])
def test_every_score_runs_on_timm_families(family):
    from lightning_epe.spaces import TimmSpace

    torch.manual_seed(0)
    net = TimmSpace([family]).build(family, num_classes=4)
    x, y = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    for name in list_scores():
        value = get_score(name)(net, x, y)
        values = value.values() if isinstance(value, dict) else [value]
        assert all(isinstance(v, float) and not math.isnan(v) for v in values), (family, name, value)


def test_list_scores_filters_like_timm_list_models():
    assert list_scores("az_*") == ["az_expressivity", "az_nas", "az_progressivity", "az_trainability"]
    assert list_scores(["epe", "zico"]) == ["epe", "zico"]
    assert list_scores("az_*", exclude_filters="az_nas") == ["az_expressivity", "az_progressivity", "az_trainability"]
    assert list_scores("nothing*") == []
    assert list_scores() == list_scores("") == list_scores("*")


def held_out_space_net(space: str):
    """A small network of each held-out space (NB101: 2 stacks of 1 cell, stem 8; DARTS: 4 channels, 3 cells)."""
    from lightning_epe.spaces import DARTSSpace, NB101Space

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if space == "nb101":
            return NB101Space().build(NB101Space().sample(1, seed=0)[0], num_classes=4, stem_channels=8, stacks=2,
                                      cells_per_stack=1)
        return DARTSSpace().build(DARTSSpace().sample(1, seed=0)[0], num_classes=4, C=4, layers=3)


@pytest.mark.parametrize("space", ["nb101", "darts"])
@pytest.mark.parametrize("name", list_scores())
def test_every_score_runs_without_side_effects_on_the_nb101_and_darts_spaces(tiny_batch, name, space):
    x, y = tiny_batch
    net = held_out_space_net(space)
    logits = net(x)
    logits.sum().backward()  # some existing grads
    net.cells[0].requires_grad_(False)
    net.eval()
    net.stem.train()
    before = state_of(net)
    rng = torch.get_rng_state()
    value = get_score(name)(net, x, y)
    values = value.values() if isinstance(value, dict) else [value]
    assert all(isinstance(v, float) and not math.isnan(v) for v in values), (space, name, value)
    assert_same_state(before, state_of(net))
    assert torch.equal(rng, torch.get_rng_state())
