import math

import numpy as np
import pytest
import torch

from lightning_epe.scores import ensemble_scores, get_score, rank_ensemble, score_info
from lightning_epe.spaces import NB201Space


def test_rank_ensemble_by_hand():
    table = [{"a": 1.0, "b": 30.0}, {"a": 3.0, "b": 10.0}, {"a": 2.0, "b": 20.0}]
    # ranks (1 = worst): a -> 1, 3, 2 ; b -> 3, 1, 2 ; value = sum log(rank / 3)
    expected = [math.log(1 / 3) + math.log(3 / 3), math.log(3 / 3) + math.log(1 / 3), 2 * math.log(2 / 3)]
    with pytest.raises(ValueError, match="unknown score 'a'"):
        rank_ensemble(table, members=("a", "b"))
    table = [{"epe": r["a"], "params": r["b"]} for r in table]
    got = rank_ensemble(table, members=("epe", "params"))
    assert got == pytest.approx(expected)


def test_weighted_rank_ensemble_by_hand_and_bad_weights():
    table = [{"epe": 1.0, "params": 30.0}, {"epe": 3.0, "params": 10.0}, {"epe": 2.0, "params": 20.0}]
    weights = {"epe": 2.0, "params": -0.5}  # ranks: epe 1, 3, 2; params 3, 1, 2
    expected = [2 * math.log(1 / 3) - 0.5 * math.log(3 / 3), 2 * math.log(3 / 3) - 0.5 * math.log(1 / 3),
                1.5 * math.log(2 / 3)]
    assert rank_ensemble(table, ("epe", "params"), weights) == pytest.approx(expected)
    assert rank_ensemble(table, ("epe", "params"), {"epe": 1, "params": 1}) == pytest.approx(
        rank_ensemble(table, ("epe", "params")))  # unit weights: the unweighted aggregate
    with pytest.raises(ValueError, match=r"missing \['params'\]"):
        rank_ensemble(table, ("epe", "params"), {"epe": 1.0})
    with pytest.raises(ValueError, match=r"not members \['synflow'\]"):
        rank_ensemble(table, ("epe", "params"), {"epe": 1.0, "params": 1.0, "synflow": 1.0})
    with pytest.raises(ValueError, match="finite number"):
        rank_ensemble(table, ("epe", "params"), {"epe": float("nan"), "params": 1.0})
    with pytest.raises(ValueError, match="map each member"):
        rank_ensemble(table, ("epe", "params"), [1.0, 2.0])


def test_top_weights_name_registered_scores():
    from lightning_epe.scores import TOP_WEIGHTS

    assert all(score_info(name) for name in TOP_WEIGHTS)
    assert rank_ensemble([{m: 1.0 for m in TOP_WEIGHTS}], tuple(TOP_WEIGHTS), TOP_WEIGHTS) == [0.0]


def test_two_stages_reorder_the_top_of_the_first_by_hand():
    # epe ranks d > c > b > a; params ranks a > b > c > d. Stage 1 by epe, its top half (d, c) re-ordered by params
    table = [{"epe": 1.0, "params": 40.0}, {"epe": 2.0, "params": 30.0}, {"epe": 3.0, "params": 20.0},
             {"epe": 4.0, "params": 10.0}]
    rerank = {"keep": 0.5, "weights": {"epe": 0.0, "params": 1.0}}
    got = rank_ensemble(table, ("epe", "params"), {"epe": 1.0, "params": 0.0}, rerank)
    assert got == pytest.approx(np.log(np.array([1, 2, 4, 3]) / 4))  # final order c > d > b > a
    whole = rank_ensemble(table, ("epe", "params"), {"epe": 1.0, "params": 0.0}, {**rerank, "keep": 1.0})
    assert whole == pytest.approx(np.log(np.array([4, 3, 2, 1]) / 4))  # keep everything: the second stage alone
    with pytest.raises(ValueError, match="keep must be a fraction"):
        rank_ensemble(table, ("epe", "params"), None, {**rerank, "keep": 0.0})
    with pytest.raises(ValueError, match="rerank must be"):
        rank_ensemble(table, ("epe", "params"), None, {"weights": rerank["weights"]})
    with pytest.raises(ValueError, match="weights must name exactly"):
        rank_ensemble(table, ("epe", "params"), None, {"keep": 0.5, "weights": {"params": 1.0}})


def test_the_default_ensemble_is_the_tau_members_then_the_top_weights():
    from lightning_epe.scores import DEFAULT_MEMBERS, DEFAULT_RERANK, DEFAULT_WEIGHTS, TAU_MEMBERS, TOP_WEIGHTS
    from lightning_epe.scores.ensemble import average_ranks, rank_aggregate

    rng = np.random.default_rng(1)
    table = [{m: float(v) for m, v in zip(DEFAULT_MEMBERS, row)} for row in rng.normal(size=(40, len(DEFAULT_MEMBERS)))]
    columns = {m: np.array([r[m] for r in table]) for m in DEFAULT_MEMBERS}
    first = rank_aggregate({m: columns[m] for m in TAU_MEMBERS})
    second = rank_aggregate(columns, TOP_WEIGHTS)
    top = average_ranks(first) > (1 - DEFAULT_RERANK["keep"]) * 40
    assert top.sum() == round(DEFAULT_RERANK["keep"] * 40)
    expected_order = np.where(top, 100 + second, first)  # the top by the second stage, above the rest
    got = np.array(rank_ensemble(table))
    assert np.argsort(got).tolist() == np.argsort(expected_order).tolist()
    assert rank_ensemble(table) == rank_ensemble(table, DEFAULT_MEMBERS, DEFAULT_WEIGHTS, DEFAULT_RERANK)
    # the previous default, one stage over the tau members, stays reachable by naming them
    assert rank_ensemble(table, TAU_MEMBERS) == pytest.approx(first.tolist())
    assert set(DEFAULT_WEIGHTS) == set(TOP_WEIGHTS) == set(DEFAULT_MEMBERS) >= set(TAU_MEMBERS)


def test_ties_share_ranks_and_nan_ranks_worst():
    table = [{"epe": 5.0}, {"epe": 5.0}, {"epe": float("nan")}, {"epe": None}, {"epe": 7.0}]
    got = rank_ensemble(table, members=("epe",))
    ranks = np.exp(np.array(got)) * len(table)
    assert ranks == pytest.approx([3.5, 3.5, 1.5, 1.5, 5.0])


def test_ensemble_of_one_member_orders_like_that_member():
    rng = np.random.default_rng(0)
    values = rng.normal(size=20)
    got = rank_ensemble([{"synflow": v} for v in values], members=("synflow",))
    assert np.argsort(got).tolist() == np.argsort(values).tolist()


def test_member_scores_equal_the_single_scores():
    torch.manual_seed(0)
    net = NB201Space().build(9930, num_classes=4, C=4, N=1)
    x, y = torch.randn(16, 3, 8, 8), torch.arange(16) % 4
    members = ("epe", "params", "naswot")
    got = ensemble_scores(net, x, y, members=members, class_count="true")
    assert got == {"epe": get_score("epe")(net, x, y, class_count="true"), "params": get_score("params")(net, x, y),
                   "naswot": get_score("naswot")(net, x, y)}
    assert score_info("ensemble").relative and not score_info("epe").relative


def test_bad_members():
    with pytest.raises(ValueError, match="one or more member"):
        rank_ensemble([{}], members=())
    with pytest.raises(ValueError, match="not 'ensemble' itself"):
        rank_ensemble([{}], members=("ensemble",))


def test_ensemble_search_ranks_candidates_and_resumes(tiny_data, tmp_path):
    import json

    from lightning_epe.search import ArchitectureSearch

    members = ["epe", "params", "naswot"]
    options = dict(score="ensemble", score_options={"members": members}, budget=5, seed=0,
                   build_options={"C": 2, "N": 1}, accelerator="cpu", progress=False, results_dir=str(tmp_path))
    result = ArchitectureSearch(**options).run(tiny_data)
    table = [r["scores"] for r in result.records]
    assert [r["score"] for r in result.records] == pytest.approx(rank_ensemble(table, members))
    assert result.best["score"] == max(r["score"] for r in result.records)
    on_disk = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [set(r["scores"]) for r in on_disk] == [set(members)] * 5
    assert on_disk[0]["score"] == pytest.approx(0.0)  # provisional: the only candidate so far ranks first
    again = ArchitectureSearch(**options).run(tiny_data)  # resumed from the records: the same ranking
    assert [r["score"] for r in again.records] == pytest.approx([r["score"] for r in result.records])


def test_a_weighted_ensemble_search_ranks_with_its_weights(tiny_data):
    from lightning_epe.search import ArchitectureSearch

    members, weights = ["epe", "params"], {"epe": 1.0, "params": -3.0}
    common = dict(score="ensemble", budget=5, seed=0, build_options={"C": 2, "N": 1}, accelerator="cpu", progress=False)
    result = ArchitectureSearch(score_options={"members": members, "weights": weights}, **common).run(tiny_data)
    table = [r["scores"] for r in result.records]
    assert [r["score"] for r in result.records] == pytest.approx(rank_ensemble(table, members, weights))
    assert [r["score"] for r in result.records] != pytest.approx(rank_ensemble(table, members))
    with pytest.raises(ValueError, match="weights must name exactly the members"):
        ArchitectureSearch(score_options={"members": members, "weights": {"epe": 1.0}}, **common).run(tiny_data)


def test_callback_logs_member_scores_of_an_ensemble():
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_epe import CandidateModule, EPEScore

    torch.manual_seed(0)
    module = CandidateModule(9930, num_classes=4, build_options={"C": 2, "N": 1})
    callback = EPEScore(score="ensemble", score_options={"members": ["epe", "params"]})
    trainer = L.Trainer(max_steps=1, accelerator="cpu", callbacks=[callback], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    data = DataLoader(TensorDataset(torch.randn(16, 3, 8, 8), torch.arange(16) % 4), batch_size=16)
    trainer.fit(module, data)
    assert set(callback.value) == {"epe", "params"}
    assert "params_score" in trainer.callback_metrics
    with pytest.raises(ValueError, match="min_score needs an absolute score"):
        EPEScore(score="ensemble", min_score=1.0)
