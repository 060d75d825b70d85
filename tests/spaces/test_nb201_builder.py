"""NB201Builder: one network rewired and re-initialised per candidate, bit for bit a fresh build."""
import math

import pytest
import torch
from torch import nn

from lightning_epe._seeding import seeded
from lightning_epe.scores import epe_score
from lightning_epe.spaces import NB201Space
from lightning_epe.spaces.base import Builder
from lightning_epe.spaces.nb201_builder import NB201Builder

space = NB201Space()
SIZES = {"C": 8, "N": 2}

# Cells dominated by one op (none and skip ones included), then a random sample without replacement.
ONE_OP = [space.index("|{0}~0|+|{0}~0|{0}~1|+|{0}~0|{0}~1|{0}~2|".format(op))
          for op in ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")]
MOSTLY = [space.index("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|"),
          space.index("|skip_connect~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"),
          space.index("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")]
CELLS = ONE_OP + MOSTLY + space.sample(40, seed=11, replace=False)


def fresh(cell, seed, **sizes):
    with seeded(seed):
        return space.build(cell, num_classes=10, **(sizes or SIZES))


def assert_same_network(net: nn.Module, ref: nn.Module):
    """The same modules (types, names, order), bit-equal parameters and buffers, the same state."""
    assert [(n, type(m)) for n, m in net.named_modules()] == [(n, type(m)) for n, m in ref.named_modules()]
    ours, theirs = net.state_dict(), ref.state_dict()
    assert list(ours) == list(theirs)
    for name in theirs:
        assert ours[name].dtype == theirs[name].dtype and torch.equal(ours[name].cpu(), theirs[name]), name
    assert all(m.training for m in net.modules())
    assert all(p.requires_grad and p.grad is None for p in net.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in net.modules())


def test_every_candidate_is_bitwise_a_fresh_build():
    builder = space.builder("cpu", 10, **SIZES)
    assert isinstance(builder, NB201Builder)
    for seed, cell in enumerate(CELLS):
        assert_same_network(builder.build(cell, seed), fresh(cell, seed))


def test_the_same_cell_twice_and_the_default_sizes():
    builder = space.builder("cpu", 10)
    for seed, cell in [(3, CELLS[0]), (4, CELLS[3]), (5, CELLS[3]), (6, 9930)]:
        assert_same_network(builder.build(cell, seed), fresh(cell, seed, C=16, N=5))


def test_outputs_and_scores_equal_a_fresh_builds(tiny_batch):
    x, y = tiny_batch
    builder = space.builder("cpu", 10, C=4, N=1)
    for seed, cell in enumerate(CELLS[:8]):
        net, ref = builder.build(cell, seed), fresh(cell, seed, C=4, N=1)
        assert torch.equal(net(x)[1], ref(x)[1])
        ours, theirs = epe_score(net, x, y), epe_score(ref, x, y)
        assert ours == theirs or (math.isnan(ours) and math.isnan(theirs))  # (NaN: a cell of 'none' only)


def test_weights_staged_for_a_device_are_the_same():
    builder = space.builder("cpu", 10, **SIZES)
    builder.staged = True  # as on a GPU: drawn into one CPU buffer, then copied into the network
    for seed, cell in enumerate(CELLS[:12]):
        assert_same_network(builder.build(cell, seed), fresh(cell, seed))


def test_a_closed_builder_starts_over():
    builder = space.builder("cpu", 10, **SIZES)
    first = builder.build(CELLS[2], 0)
    builder.close()
    assert builder.network is None and not builder.pool
    again = builder.build(CELLS[2], 0)
    assert again is not first
    assert_same_network(again, fresh(CELLS[2], 0))


def test_what_a_score_changed_is_undone():
    builder = space.builder("cpu", 10, **SIZES)
    net = builder.build(CELLS[3], 0)
    with torch.no_grad():
        for p in net.parameters():
            p.data.abs_()  # (.data: no version bump, as synflow-like scores do it)
        for b in net.buffers():
            b.add_(3)
    net.eval()
    for p in list(net.parameters())[:5]:
        p.grad = torch.ones_like(p)
        p.requires_grad_(False)
    assert_same_network(builder.build(CELLS[3], 1), fresh(CELLS[3], 1))


@pytest.mark.parametrize("change", ["hook", "replaced module", "replaced parameter", "double", "data"])
def test_a_network_changed_beyond_its_values_is_built_anew(change):
    builder = space.builder("cpu", 10, **SIZES)
    net = builder.build(CELLS[3], 0)
    conv = net.cells[0].layers[0].op[1]
    if change == "hook":
        conv.register_forward_hook(lambda *a: None)
    elif change == "replaced module":
        net.classifier = nn.Linear(32, 10)
    elif change == "replaced parameter":
        conv.weight = nn.Parameter(conv.weight.detach().clone())
    elif change == "double":
        net.double()
    else:
        net.cells[0].layers[0].op[2].running_mean.data = torch.zeros(8)
    rebuilt = builder.build(CELLS[3], 1)
    assert rebuilt is not net
    assert_same_network(rebuilt, fresh(CELLS[3], 1))
    assert builder.build(CELLS[4], 2) is rebuilt  # and reused from then on


def test_a_default_dtype_of_float64_is_followed():
    builder = space.builder("cpu", 10, **SIZES)
    builder.build(CELLS[3], 0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for staged in (False, True):
            builder.staged = staged
            net = builder.build(CELLS[4], 1)
            assert next(net.parameters()).dtype == torch.float64
            assert_same_network(net, fresh(CELLS[4], 1))
    finally:
        torch.set_default_dtype(previous)
    assert_same_network(builder.build(CELLS[4], 1), fresh(CELLS[4], 1))


def test_the_global_rng_is_left_alone():
    builder = space.builder("cpu", 10, **SIZES)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    for seed, cell in enumerate(CELLS[:5]):
        builder.build(cell, seed)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_space_with_its_own_build_or_bad_options_gets_the_plain_builder():
    class Wider(NB201Space):
        def build(self, candidate, num_classes=10, **options):
            return super().build(candidate, num_classes, **dict(options, C=options.get("C", 16) * 2))

    assert type(Wider().builder("cpu", 10, **SIZES)) is Builder
    assert type(space.builder("cpu", 10, C=8, NN=1)) is Builder  # each candidate fails with build's error
    with pytest.raises(TypeError, match="unexpected keyword argument 'NN'"):
        space.builder("cpu", 10, C=8, NN=1).build(CELLS[0], 0)


def test_the_plain_builder_is_seeded_and_moves_to_the_device():
    builder = Builder(space, "cpu", 10, **SIZES)
    assert_same_network(builder.build(CELLS[5], 7), fresh(CELLS[5], 7))
    assert builder.network is not None
    builder.close()
    assert builder.network is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the weights staged on the CPU, copied at once")
def test_on_cuda_the_weights_are_the_cpu_builds():
    builder = space.builder("cuda", 10, **SIZES)
    for seed, cell in enumerate(CELLS[:10]):
        net = builder.build(cell, seed)
        assert all(t.is_cuda for t in net.state_dict().values())
        assert_same_network(net, fresh(cell, seed))
