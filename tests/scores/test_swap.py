"""SWAP: parity with the official code (pym1024/SWAP@f6049f7), the packed-code counter, options and errors."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from lightning_epe.scores import get_score, score_info
from lightning_epe.scores.swap import (
    ActivationPatterns,
    gaussian_init_,
    parameter_count_k,
    swap_from_activations,
    swap_regular_factor,
    swap_score,
)
from lightning_epe.spaces import NB201Space
from tests.conftest import official_net

SLOW = pytest.mark.slow
TAGS = [pytest.param("best_c10", marks=SLOW), "resnet", pytest.param("pool_1x1", marks=SLOW), "all_skip", "all_none"]


def official_formula(activations):
    """The official SWAP computation (sign, transpose, unique rows), for comparison."""
    batch = activations[0].shape[0]
    matrix = torch.sign(torch.cat([a.reshape(batch, -1) for a in activations], 1))
    return float(torch.unique(matrix.T, dim=0).size(0))


# ---------------------------------------------------------------- parity with the official code


@pytest.mark.parametrize("tag", TAGS)
def test_matches_official_swap(reference, sota, tag):
    # x[:16] (correlation.py --input_samples 16), loaded weights, train mode; counts are integers: exact
    assert swap_score(official_net(reference, tag), reference["x"][:16]) == sota[tag]["swap"]["swap"]


@pytest.mark.parametrize("tag", TAGS)
def test_gaussian_reinit_matches_first_of_the_official_32(reference, sota, tag):
    # correlation.py: torch.manual_seed(0) once, then network.apply(network_weight_gaussian_init) and a
    # forward per repeat; the first repeat is the first draw after the seed (the RNG order is kept)
    net = official_net(reference, tag)
    torch.manual_seed(0)
    expected = sota[tag]["swap"]["swap_gaussian_reinit_first_of_32"]
    assert swap_score(net, reference["x"][:16], init="gaussian") == expected


@pytest.mark.parametrize("tag", ["all_skip", "all_none"])
def test_official_32_repeat_protocol_on_cheap_cells(reference, sota, tag):
    # the 32 re-initialisations draw from one RNG stream; swap_score restores the RNG, so the stream is
    # advanced here with the public gaussian_init_ (the library's own protocol is Draws over inits)
    net = official_net(reference, tag)
    torch.manual_seed(0)
    values = []
    for _ in range(32):
        gaussian_init_(net)
        values.append(swap_score(net, reference["x"][:16]))
    assert np.mean(values) == sota[tag]["swap"]["swap_gaussian_reinit_mean32_seed0"]


@pytest.mark.parametrize("tag", ["resnet", "all_skip"])
def test_regulariser_uses_the_official_parameter_count(reference, sota, tag):
    net = official_net(reference, tag)
    assert parameter_count_k(net) == sota[tag]["swap"]["params_K"]
    mu, sigma = 500.0, 2e5
    factor = math.exp(-((sota[tag]["swap"]["params_K"] - mu) ** 2) / sigma)
    got = swap_score(net, reference["x"][:16], regular=True, mu=mu, sigma=sigma)
    assert got == pytest.approx(sota[tag]["swap"]["swap"] * factor, rel=1e-12)


# ---------------------------------------------------------------- the counter


@pytest.mark.parametrize("batch", [2, 16, 24, 25, 40, 64, 65, 130])
def test_packed_codes_count_like_the_official_unique(batch):
    # B <= 24: presence table; 25..64: one int64 word, sorted unique; > 64: several words per neuron
    g = torch.Generator().manual_seed(batch)
    base = torch.randn(batch, 7, generator=g)
    # few distinct patterns, many repeats: columns are copies of 7 random sign patterns (+ noise of the same sign)
    columns = base[:, torch.randint(0, 7, (300,), generator=g)] * torch.rand(batch, 300, generator=g)
    acts = [torch.relu(columns[:, :100].reshape(batch, 4, 5, 5)), torch.relu(columns[:, 100:]),
            torch.relu(torch.randn(batch, 3, 2, generator=g))]
    assert swap_from_activations(acts) == official_formula(acts)


def test_hand_computed_patterns():
    # 3 samples; neurons' patterns (active samples): {0,1}, {0,1}, {}, {2}, {0,1,2}, {} -> 4 distinct
    x = torch.tensor([[1.0, 2.0, 0.0, -1.0, 3.0, -2.0],
                      [1.0, 5.0, -1.0, 0.0, 1.0, 0.0],
                      [0.0, -3.0, 0.0, 2.0, 4.0, -1.0]])
    assert swap_from_activations(torch.relu(x)) == 4.0
    assert swap_from_activations(x) == 4.0  # "> 0" is the pattern: negative values are off
    patterns = ActivationPatterns(3)
    assert patterns.count() == 0
    patterns.add(x)
    patterns.add(x)  # the same tensor again adds nothing (and is not coded twice)
    assert (patterns.count(), patterns.tensors, patterns.neurons) == (4, 2, 6)
    with pytest.raises(ValueError, match="batch"):
        patterns.add(torch.ones(4, 2))
    assert swap_from_activations([]) == 0.0


# ---------------------------------------------------------------- models, options, errors


def tiny_net(seed=0, classes=4, arch=9930):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return NB201Space().build(NB201Space().arch(arch), num_classes=classes, C=4, N=1)


def test_registered_and_against_the_official_formula_on_a_tiny_net(tiny_batch):
    x, y = tiny_batch
    info = score_info("swap")
    assert (info.needs_labels, info.data_dependent) == (False, True) and get_score("swap") is swap_score
    net = tiny_net()
    outputs = []
    handles = [m.register_forward_hook(lambda m, a, o: outputs.append(o.detach().clone()) if a[0].dim() == 4 else None)
               for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net.train()(x)
    for h in handles:
        h.remove()
    net.eval()
    value = swap_score(net, x, y)
    assert value == official_formula(outputs) and value == swap_score(net, x)
    assert 1 <= value <= 2 ** len(x)


def test_init_gaussian_has_no_side_effects_and_is_reproducible(tiny_batch):
    x, _ = tiny_batch
    net = tiny_net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    a = swap_score(net, x, init="gaussian")
    assert torch.equal(rng, torch.get_rng_state())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert swap_score(net, x, init="gaussian") == a  # same RNG state, same draw
    torch.manual_seed(123)
    b = swap_score(net, x, init="gaussian")
    clone = tiny_net()
    torch.manual_seed(123)
    gaussian_init_(clone)
    assert swap_score(clone, x) == b
    assert swap_score(net, x, init="gaussian", seed=123) == b  # seed= seeds the global RNG, then restores it


def test_generic_activations_and_fallback(tiny_batch):
    x, _ = tiny_batch
    x = x[:12]

    def mlp(act):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(192, 32), act, nn.Linear(32, 3))

    gelu, silu, relu = mlp(nn.GELU()), mlp(nn.SiLU()), mlp(nn.ReLU())
    # no ReLU on a 4-D input: every activation, any shape; GELU/SiLU/ReLU share the sign of their input
    with torch.no_grad():
        pre = gelu[1](gelu[0](x))
    assert swap_score(gelu, x) == swap_score(silu, x) == swap_score(relu, x) == swap_from_activations(pre)
    assert swap_score(gelu, x, activations=(nn.GELU,)) == swap_score(gelu, x)
    assert swap_score(gelu, x, activations=lambda m: isinstance(m, nn.GELU)) == swap_score(gelu, x)

    class Mixed(nn.Module):  # a 4-D ReLU and a GELU: the official rule takes only the ReLU
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.gelu, self.fc = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.GELU(), nn.Linear(4, 2)

        def forward(self, t):
            h = self.relu(self.conv(t))
            return self.fc(self.gelu(h.mean((2, 3))))

    torch.manual_seed(0)
    mixed = Mixed()
    with torch.no_grad():
        conv_out = mixed.conv(x)
        pooled = torch.relu(conv_out).mean((2, 3))
    assert swap_score(mixed, x) == swap_from_activations(conv_out)
    assert swap_score(mixed, x, activations=(nn.GELU,)) == swap_from_activations(pooled)


def test_timm_model_without_relu():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=4)  # SiLU only
    x = torch.randn(8, 3, 32, 32)
    value = swap_score(model, x)
    assert 1 <= value <= 2 ** 8 and value == swap_score(model, x)


def test_errors(tiny_batch):
    x, _ = tiny_batch
    net = tiny_net()

    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(192, 3)

        def forward(self, t):
            return torch.relu(self.fc(t.flatten(1)))

    with pytest.raises(ValueError, match="no activation to hook"):
        swap_score(Functional(), x)
    with pytest.raises(ValueError, match="needs mu and sigma"):
        swap_score(net, x, regular=True)
    with pytest.raises(ValueError, match="needs mu and sigma"):
        swap_score(net, x, regular=True, mu=1.0)
    with pytest.raises(ValueError, match="only apply with regular=True"):
        swap_score(net, x, mu=1.0, sigma=2.0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        swap_score(net, x, regular=True, mu=1.0, sigma=0.0)
    with pytest.raises(ValueError, match="finite number mu"):
        swap_regular_factor(net, float("nan"), 1.0)
    with pytest.raises(ValueError, match="init must be None"):
        swap_score(net, x, init="kaiming")
    with pytest.raises(ValueError, match="seed only applies"):
        swap_score(net, x, seed=0)
    with pytest.raises(TypeError, match="seed must be an int"):
        swap_score(net, x, init="gaussian", seed=1.5)
    with pytest.raises(TypeError, match="activations must be"):
        swap_score(net, x, activations=(int,))
    with pytest.raises(ValueError, match="at least 2"):
        swap_score(net, x[:1])
    with pytest.raises(TypeError, match="floating-point"):
        swap_score(net, (x * 10).long())
    with pytest.raises(ValueError, match="NaN or inf"):
        swap_score(net, torch.full_like(x, math.nan))


def test_no_side_effects_when_the_forward_fails(tiny_batch):
    x, _ = tiny_batch
    net = tiny_net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    net.classifier.register_forward_hook(lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        swap_score(net, x, init="gaussian")  # re-initialised weights are put back
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert [p.requires_grad for p in net.parameters()] == flags and net.training
