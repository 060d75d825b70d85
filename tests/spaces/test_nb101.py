import itertools
import json
import random

import numpy as np
import pytest
import torch

from lightning_epe.spaces import NB101Space
from lightning_epe.spaces.nb101 import EXAMPLE, MAX_EDGES, OPS, _split, prune, validity, vertex_channels

from ._naslib_rows import layer_flops, naslib_rows, param_count

SPACE = NB101Space()
SMALL = {"stem_channels": 8, "stacks": 2, "cells_per_stack": 1}


def rows():
    return naslib_rows("nb101/nb101_cifar10_naslib.csv")


def test_parse_and_describe_round_trip_every_row_of_the_shared_file():
    for row in rows():
        text = f"{row['matrix']}|{row['ops']}"
        candidate = SPACE.parse(text)
        assert candidate == text == SPACE.describe(candidate) == SPACE.parse(row["naslib_key"])
        assert SPACE.parse((row["matrix"], row["ops"].split(","))) == candidate
        assert SPACE.naslib_key(candidate) == row["naslib_key"]
        assert json.loads(json.dumps(candidate)) == candidate and hash(candidate) is not None


@pytest.mark.slow  # 250 full-size networks on the meta device
def test_parameters_equal_params_m_and_flops_follow_one_rule_for_every_row():
    """params == params_m to its 6 decimals (one parameter) for all 250 rows, built on the meta device (about
    12 s). FLOPs: NASLib's flops_m is exactly the multiply-adds of convolutions and the classifier, plus 3 per
    conv-BN-ReLU output element (BN's scale and shift, the ReLU) and the kernel's area per max-pool output."""
    for row in rows():
        with torch.device("meta"):
            net = SPACE.build(SPACE.parse(row["naslib_key"]))
        assert round(param_count(net) / 1e6, 6) == float(row["params_m"]), row["naslib_key"]
        c = layer_flops(net)
        assert c["bn_affine"] == c["relu"]  # every BN of NB101 is in a conv-BN-ReLU
        flops = c["macs"] + 2 * c["bn_affine"] + c["relu"] + c["pool_area"]
        assert round(flops / 1e6, 6) == float(row["flops_m"]), row["naslib_key"]


def test_build_is_nb101s_network_at_the_default_size_and_smaller_by_option():
    net = SPACE.build(EXAMPLE)
    cells = [m for m in net.cells if type(m).__name__ == "Cell"]
    assert len(cells) == 9 and net.stem[0].out_channels == 128 and net.classifier.in_features == 512
    torch.manual_seed(0)
    small = SPACE.build(EXAMPLE, num_classes=4, **SMALL)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert small.classifier.in_features == 16
    with pytest.raises(ValueError, match="stacks must be a positive int"):
        SPACE.build(EXAMPLE, stacks=0)


def test_vertex_channels_follow_nb101s_rule():
    # input -> 1, 2, 3 -> output: 128 output channels split 43, 43, 42
    m = np.zeros((5, 5), dtype=int)
    m[0, 1:4] = 1
    m[1:4, 4] = 1
    assert vertex_channels(64, 128, m) == [64, 43, 43, 42, 128]
    # a chain input -> 1 -> 2 -> output: vertex 1 takes its successor's channels
    chain = np.triu(np.ones((4, 4), dtype=int), 1) * np.eye(4, k=1, dtype=int)
    assert vertex_channels(32, 64, chain) == [32, 64, 64, 64]


def test_validity_as_nb101_defines_it():
    matrix, ops = _split(EXAMPLE)
    assert validity(EXAMPLE) is None
    cut = matrix.copy()
    cut[:, 6] = 0  # nothing reaches the output
    assert validity((cut, ops)) == "no path from input to output"
    dense = np.triu(np.ones((7, 7), dtype=int), 1)  # 21 edges
    assert "edges after pruning" in validity((dense, ops))
    with pytest.raises(ValueError, match="not valid"):
        SPACE.parse((dense, ops))
    # 10 edges, one of them into a vertex that reaches nothing: pruned to 9 edges, valid (NB101 prunes first)
    m = np.zeros((7, 7), dtype=int)
    m[0, 1:6] = 1
    m[1:5, 6] = 1
    m[5, 6] = 0
    m[0, 6] = 1
    m[4, 5] = 1  # vertex 5 is dangling: its edges 0->5, 4->5 are pruned
    assert m.sum() == 11 and validity((m, ops)) is None and prune(m, ops)[0].sum() == 9


@pytest.mark.parametrize("bad, match", [
    ("011|input,output", "must be 2x2"),
    ("0010|input,output", "upper triangular"),
    (EXAMPLE.replace("maxpool3x3", "conv5x5", 1), "unknown op"),
    (EXAMPLE.replace("input", "output", 1), "first op must be 'input'"),
    ("(0, 1)", "49 matrix entries and 7 op codes"),
    ("nonsense", "must be '<matrix>|<ops>'"),
    (7, "must be '<matrix>|<ops>'"),
])
def test_bad_candidates_say_what_is_accepted(bad, match):
    with pytest.raises(ValueError, match=match):
        SPACE.parse(bad)


def test_sample_draws_valid_reproducible_cells_and_without_replacement_distinct_networks():
    cells = SPACE.sample(300, seed=3)
    assert cells == SPACE.sample(300, seed=3) and cells != SPACE.sample(300, seed=4)
    for cell in cells:
        matrix, ops = _split(cell)
        assert len(ops) == 7 and validity(cell) is None and prune(matrix, ops)[0].sum() <= MAX_EDGES
        assert SPACE.parse(cell) == cell
    assert {op for cell in cells for op in _split(cell)[1][1:-1]} == set(OPS)
    distinct = SPACE.sample(300, seed=3, replace=False)
    assert len({SPACE.canonical(c) for c in distinct}) == 300
    assert len({SPACE.canonical(c) for c in cells}) < 300  # with replacement, isomorphic repeats occur
    with pytest.raises(ValueError, match="423,624"):
        SPACE.sample(500_000, replace=False)


def test_mutate_changes_one_op_or_one_edge_and_stays_valid():
    rng = random.Random(0)
    kinds = set()
    for cell in SPACE.sample(100, seed=1):
        child = SPACE.mutate(cell, rng)
        assert validity(child) is None and SPACE.canonical(child) != SPACE.canonical(cell)
        (m0, o0), (m1, o1) = _split(cell), _split(child)
        changed_ops, changed_edges = sum(a != b for a, b in zip(o0, o1)), int((m0 != m1).sum())
        assert changed_ops + changed_edges == 1
        kinds.add("op" if changed_ops else "edge")
    assert kinds == {"op", "edge"}
    # a pruned (smaller) cell is padded to 7 vertices first
    small = "0110000100010000|input,conv3x3-bn-relu,maxpool3x3,output"
    assert len(_split(SPACE.mutate(small, rng))[1]) == 7


def permuted(cell: str, order) -> str | None:
    """The cell with its interior vertices renumbered in ``order``; None when that is not a topological order."""
    matrix, ops = _split(cell)
    perm = (0, *order, len(ops) - 1)
    if np.tril(matrix[np.ix_(perm, perm)]).any():
        return None
    return SPACE.parse((matrix[np.ix_(perm, perm)], [ops[v] for v in perm]))


def test_isomorphic_cells_have_one_canonical_form_and_build_the_same_network():
    checked = 0
    for row in rows()[:40]:
        cell = SPACE.parse(row["naslib_key"])
        for order in itertools.permutations(range(1, 6)):
            other = permuted(cell, order)
            if other is not None:
                assert SPACE.canonical(other) == SPACE.canonical(cell)
                checked += 1
    assert checked > 100
    # the same network: an isomorphic relabelling has the same parameter count
    cell = SPACE.parse(rows()[0]["naslib_key"])
    twins = [c for c in (permuted(cell, o) for o in itertools.permutations(range(1, 6))) if c not in (None, cell)]
    assert twins
    assert param_count(SPACE.build(twins[0], **SMALL)) == param_count(SPACE.build(cell, **SMALL))
    # a vertex that reaches nothing is pruned: the same network as without it
    matrix, ops = _split(EXAMPLE)
    dangling = matrix.copy()
    dangling[1, 6], dangling[1, 5] = 0, 0
    dangling[0, 1] = 1
    pruned = SPACE.parse(prune(dangling, ops))
    assert SPACE.canonical((dangling, ops)) == SPACE.canonical(pruned)
    # and a different op is a different network
    assert SPACE.canonical(EXAMPLE.replace("maxpool3x3", "conv1x1-bn-relu", 1)) != SPACE.canonical(EXAMPLE)


def test_canonical_form_counts_nb101s_unique_networks_of_a_small_size():
    """All labelled cells of 4 vertices (2 interior) reduce to as many networks as an independent count by brute
    force over relabellings says (graphs up to swapping the two interior vertices)."""
    seen_forms, seen_brute = set(), set()
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    for bits in itertools.product((0, 1), repeat=len(pairs)):
        m = np.zeros((4, 4), dtype=int)
        for (i, j), b in zip(pairs, bits):
            m[i, j] = b
        for a, b in itertools.product(OPS, repeat=2):
            ops = ("input", a, b, "output")
            if validity((m, ops)) is not None or len(prune(m, ops)[1]) != 4:
                continue  # only cells that keep all 4 vertices
            seen_forms.add(SPACE.canonical((m, ops)))
            swapped = m[np.ix_((0, 2, 1, 3), (0, 2, 1, 3))]
            keys = [(m.tobytes(), ops)]
            if not np.tril(swapped).any():
                keys.append((swapped.tobytes(), ("input", b, a, "output")))
            seen_brute.add(min(keys))
    assert len(seen_forms) == len(seen_brute) > 0


def test_nasbench_pytorch_builds_the_same_parameters_when_installed():
    nb = pytest.importorskip("nasbench_pytorch.model")
    for row in rows()[:5]:
        matrix, ops = _split(row["naslib_key"])
        ref = nb.Network((matrix, list(ops)), stem_out_channels=128, num_stacks=3, num_modules_per_stack=3,
                         num_labels=10)
        ref_count = sum(p.numel() for name, p in ref.named_parameters() if not name.endswith(".a"))
        assert param_count(SPACE.build(row["naslib_key"])) == ref_count
