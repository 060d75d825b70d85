import json
import random

import pytest
import torch

from lightning_epe.spaces import DARTSSpace
from lightning_epe.spaces.darts import EXAMPLE, OPS, _split

from ._naslib_rows import layer_flops, naslib_rows, param_count

SPACE = DARTSSpace()
SMALL = {"C": 4, "layers": 3}


def rows():
    return naslib_rows("nb301/nb301_cifar10_naslib.csv")


def test_parse_and_describe_round_trip_every_row_of_the_shared_file():
    for row in rows():
        text = f"{row['normal']}|{row['reduce']}"
        candidate = SPACE.parse(text)
        assert candidate == text == SPACE.describe(candidate) == SPACE.parse(row["naslib_key"])
        assert SPACE.parse((row["normal"], row["reduce"])) == candidate
        assert SPACE.naslib_key(candidate) == row["naslib_key"]
        assert json.loads(json.dumps(candidate)) == candidate


@pytest.mark.slow  # 250 full-size networks on the meta device
def test_parameters_equal_params_m_for_every_row_and_flops_follow_one_rule():
    """The default build (32 channels, 8 cells, no auxiliary head, BN without affine parameters inside the
    operations) has params == params_m to its 6 decimals (one parameter) for all 250 rows, built on the meta
    device (about 50 s on a busy 2-core machine). FLOPs: flops_m is the multiply-adds of convolutions and the
    classifier, plus per output element 2 for an affine BN, 1 for a BN without affine parameters, 1 for a ReLU and
    the kernel's area + 1 for a pooling, plus a remainder that is the same for every genotype (the
    genotype-independent stem and head, counted by a rule not reproduced here)."""
    remainders = set()
    for row in rows():
        with torch.device("meta"):
            net = SPACE.build(SPACE.parse(row["naslib_key"]))
        assert round(param_count(net) / 1e6, 6) == float(row["params_m"]), row["naslib_key"]
        c = layer_flops(net)
        flops = c["macs"] + 2 * c["bn_affine"] + c["bn_plain"] + c["relu"] + c["pool_area"] + c["pool"]
        remainders.add(round(float(row["flops_m"]) * 1e6 - flops))
    assert len(remainders) == 1 and 0 <= remainders.pop() < 1e5  # < 0.1 MFLOPs of about 200


def test_darts_evaluation_size_by_options():
    """DARTS's CIFAR-10 evaluation network of its DARTS (2nd order) genotype: 3.349342M parameters without the
    auxiliary head, the figure DARTS's training log prints (``param size = 3.349342MB``)."""
    with torch.device("meta"):
        net = SPACE.build(EXAMPLE, C=36, layers=20, auxiliary=True, affine=True)
    assert sum(p.numel() for n, p in net.named_parameters() if not n.startswith("auxiliary")) == 3_349_342
    assert len(net.cells) == 20 and net.reductions == (6, 13)
    torch.manual_seed(0)
    small = SPACE.build(EXAMPLE, num_classes=3, C=4, layers=6, auxiliary=True)
    out = small.train()(torch.randn(2, 3, 32, 32))
    assert out["logits"].shape == out["logits_aux"].shape == (2, 3)
    assert small.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert SPACE.build(EXAMPLE, **SMALL)(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_affine_false_inside_operations_and_affine_preprocessing():
    net = SPACE.build(EXAMPLE, **SMALL)
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.affine == (".ops." not in name), name


@pytest.mark.parametrize("bad, match", [
    (EXAMPLE.replace("sep_conv_3x3", "none", 1), "unknown op 'none'"),
    (EXAMPLE.replace("sep_conv_3x3~1", "sep_conv_3x3~0", 1), "reads input 0 twice"),
    (EXAMPLE.replace("dil_conv_3x3~2", "dil_conv_3x3~5", 1), "node 5 reads input 5"),
    (EXAMPLE.split("|")[0] + "|" + "skip_connect~0", "has 1 edges"),
    ("[[(0, 9)]]", "op indices 0..6"),
    ("sep_conv_3x3-0|x", "is not 'op~input'"),
    (3, "must be '<normal>|<reduce>'"),
])
def test_bad_candidates_say_what_is_accepted(bad, match):
    with pytest.raises(ValueError, match=match):
        SPACE.parse(bad)


def check_valid(candidate):
    for cell in _split(candidate):
        assert len(cell) == 8
        for k in range(4):
            (op_a, a), (op_b, b) = cell[2 * k], cell[2 * k + 1]
            assert op_a in OPS and op_b in OPS and a != b and a < k + 2 and b < k + 2


def test_sample_draws_valid_reproducible_genotypes():
    cells = SPACE.sample(200, seed=5)
    assert cells == SPACE.sample(200, seed=5) and cells != SPACE.sample(200, seed=6)
    for candidate in cells:
        check_valid(candidate)
    used = {(op, source) for c in cells for cell in _split(c) for op, source in cell}
    assert {op for op, _ in used} == set(OPS) and {s for _, s in used} == set(range(5))  # node 5 reads 0..4
    assert len({SPACE.canonical(c) for c in SPACE.sample(200, seed=5, replace=False)}) == 200


def test_mutate_changes_one_edge_and_stays_valid():
    rng = random.Random(0)
    kinds = set()
    for candidate in SPACE.sample(100, seed=2):
        child = SPACE.mutate(candidate, rng)
        check_valid(child)
        assert SPACE.canonical(child) != SPACE.canonical(candidate)
        diffs = [(a, b) for x, y in zip(_split(candidate), _split(child)) for a, b in zip(x, y) if a != b]
        assert len(diffs) == 1
        kinds.add("op" if diffs[0][0][1] == diffs[0][1][1] else "input")
    assert kinds == {"op", "input"}


def test_canonical_orders_each_nodes_two_edges():
    normal, reduce = EXAMPLE.split("|")
    edges = normal.split(";")
    edges[0], edges[1] = edges[1], edges[0]  # node 2's inputs swapped: the same sum, the same network
    swapped = ";".join(edges) + "|" + reduce
    assert SPACE.canonical(swapped) == SPACE.canonical(EXAMPLE) and swapped != SPACE.parse(EXAMPLE)
    assert param_count(SPACE.build(swapped, **SMALL)) == param_count(SPACE.build(EXAMPLE, **SMALL))
    assert SPACE.canonical(EXAMPLE.replace("sep_conv_3x3", "sep_conv_5x5", 1)) != SPACE.canonical(EXAMPLE)
