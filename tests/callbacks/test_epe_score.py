import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_epe import CandidateModule, EPEScore
from lightning_epe.scores import epe_score

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
TINY = {"C": 4, "N": 1}


def loader(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.arange(n) % 4
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)


def trainer(callbacks=(), steps=2):
    return L.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=list(callbacks), logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                     deterministic=True)


def module():
    torch.manual_seed(0)
    return CandidateModule(ARCH, num_classes=4, build_options=TINY)


def test_training_with_and_without_callback_gives_identical_weights():
    runs = []
    for callbacks in ([], [EPEScore()]):
        L.seed_everything(0)
        m = module()
        trainer(callbacks).fit(m, loader())
        runs.append(m.state_dict())
    assert runs[0].keys() == runs[1].keys()
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key


def test_callback_score_equals_function_on_first_batch():
    L.seed_everything(0)
    m = module()
    batch = next(iter(DataLoader(TensorDataset(torch.randn(32, 3, 8, 8), torch.arange(32) % 4), batch_size=32)))
    expected = epe_score(m, *batch)
    callback = EPEScore(batch=batch)
    t = trainer([callback], steps=1)
    t.fit(m, loader())
    assert callback.score == expected
    assert t.callback_metrics["epe_score"].item() == pytest.approx(expected)


def test_min_score_stops_before_any_step():
    m = module()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    callback = EPEScore(min_score=math.inf)
    t = trainer([callback], steps=5)
    with pytest.warns(UserWarning, match="pre-select|Pre-select"):
        t.fit(m, loader())
    assert t.global_step == 0
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert callback.score is not None and callback.score > 0


def test_unknown_score_name():
    with pytest.raises(ValueError, match="available scores"):
        EPEScore(score="nope")
