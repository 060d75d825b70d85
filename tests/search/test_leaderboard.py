"""lightning_epe.rank(models, data): a search over a plain list in one call, and its Leaderboard."""
import csv
import json

import pytest
import torch
from torch import nn

import lightning_epe
from lightning_epe.scores import DEFAULT_MEMBERS, epe_score
from lightning_epe.search import Leaderboard, TensorBatch


def two_convs(num_classes=10, width=4):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def wide(num_classes=10):
    return two_convs(num_classes, width=16)


def broken(num_classes=10):
    return nn.Linear(5, num_classes)  # cannot take images


def constant(num_classes=10):
    net = two_convs(num_classes)
    for p in net.parameters():
        nn.init.zeros_(p)  # no input gradient: EPE is undefined (NaN)
    return net


def test_rank_a_list_on_a_datamodule(tiny_data):
    board = lightning_epe.rank([two_convs, wide, broken, constant], tiny_data, score="epe")
    assert isinstance(board, Leaderboard)
    scored = [r for r in board if r["score"] is not None]
    assert [r["rank"] for r in board] == [1, 2, None, None]
    assert [r["score"] for r in scored] == sorted((r["score"] for r in scored), reverse=True)
    assert board.names[2:] == ["constant", "broken"]  # NaN, then failed
    assert board[2]["reason"] and board[3]["error"].startswith("RuntimeError") and board.failed == [board[3]]
    assert board.best is board[0] and board.best["candidate"] in ("two_convs", "wide")
    text = str(board)
    assert "two_convs" in text and "2 scored, 1 NaN, 1 failed" in text


def test_rank_a_batch_scores_every_model_on_that_batch():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 8, 8, generator=g), torch.arange(16) % 4
    board = lightning_epe.rank({"small": two_convs, "wide": wide}, (x, y), score="epe", seed=3)
    for record in board:
        torch.manual_seed(record["seed"])
        net = {"small": two_convs, "wide": wide}[record["candidate"]](num_classes=4)
        assert record["score"] == pytest.approx(epe_score(net, x, y), rel=1e-6)  # the whole batch (in any order)


def test_rank_with_the_default_ensemble(tiny_data):
    board = lightning_epe.rank([two_convs, wide], tiny_data)
    assert board.score == "ensemble" and {r["rank"] for r in board} == {1, 2}
    assert set(board[0]["scores"]) == set(DEFAULT_MEMBERS)  # every default member's value, for the user to read


def test_a_leaderboard_sorts_prints_and_saves(tiny_data, tmp_path):
    board = lightning_epe.rank([two_convs, wide, broken], tiny_data, score="epe")
    by_name = sorted(board, key=lambda r: r["candidate"])
    assert [r["candidate"] for r in by_name] == ["broken", "two_convs", "wide"]
    rows = list(csv.DictReader(board.save(tmp_path / "board.csv").open()))
    assert [r["candidate"] for r in rows] == board.names and rows[0]["rank"] == "1" and rows[2]["error"]
    assert json.loads((board.save(tmp_path / "board.json")).read_text()) == list(board)
    lines = board.save(tmp_path / "out" / "board.jsonl").read_text().splitlines()
    assert [json.loads(line)["candidate"] for line in lines] == board.names
    with pytest.raises(ValueError, match=r"writes \.csv, \.json or \.jsonl files"):
        board.save(tmp_path / "board.txt")


def test_a_batch_is_checked():
    with pytest.raises(TypeError, match="a pair of tensors"):
        TensorBatch([1, 2], torch.arange(2))
    with pytest.raises(ValueError, match="differ in length: 3 and 2"):
        TensorBatch(torch.randn(3, 3, 8, 8), torch.arange(2))
    assert TensorBatch(torch.randn(4, 1, 8, 8), torch.tensor([0, 6, 1, 2])).num_classes == 7
