import math
import re

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
    assert callback.value == expected
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
    assert callback.value is not None and callback.value > 0
    assert callback.refused and "below min_score=inf" in callback.refusal


def test_the_decision_is_an_attribute():
    passed = EPEScore(min_score=-math.inf)
    assert passed.refused is False and passed.refusal is None  # before any fit
    t = trainer([passed], steps=2)
    t.fit(module(), loader())
    assert t.global_step == 2 and passed.refused is False and passed.refusal is None


def test_unknown_score_name():
    with pytest.raises(ValueError, match="available scores"):
        EPEScore(score="nope")


def test_score_is_a_deprecated_alias_of_value():
    callback = EPEScore(batch=next(iter(loader())))
    trainer([callback], steps=1).fit(module(), loader())
    with pytest.warns(DeprecationWarning, match="EPEScore.value"):
        assert callback.score == callback.value


TWO_PROCESSES = '''
import json, math, os, sys
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset
from lightning_epe import CandidateModule, EPEScore

rank = int(os.environ.get("LOCAL_RANK", 0))
torch.manual_seed(0)
model = CandidateModule("{arch}", num_classes=4, build_options={{"C": 4, "N": 1}})
data = DataLoader(TensorDataset(torch.randn(64, 3, 8, 8), torch.arange(64) % 4), batch_size=16)
# only rank 1 finds the score too low: the decision is reduced, so both ranks must stop
callback = EPEScore(min_score=math.inf if rank == 1 else -math.inf)
trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=2, strategy="ddp", logger=False,
                    callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=sys.argv[1])
trainer.fit(model, data)
with open(os.path.join(sys.argv[1], f"rank{{rank}}.json"), "w") as f:
    json.dump({{"steps": trainer.global_step, "value": callback.value}}, f)
'''


def test_the_stop_decision_is_the_same_on_every_process(tmp_path):
    import json
    import os
    import subprocess
    import sys

    script = tmp_path / "two_processes.py"
    script.write_text(TWO_PROCESSES.format(arch=ARCH))
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT")}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["steps"] for r in ranks] == [0, 0]
    assert all(math.isfinite(r["value"]) for r in ranks)


# ---------------------------------------------------------------------------------------------
# Reliability, round two (docs/reliability.md)


def test_min_score_refuses_even_under_min_epochs():
    m = module()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    t = L.Trainer(max_epochs=4, min_epochs=2, min_steps=3, accelerator="cpu", devices=1, logger=False,
                  callbacks=[EPEScore(min_score=math.inf)], enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False)
    with pytest.warns(UserWarning, match="stopping before training"):
        t.fit(m, loader())
    assert t.global_step == 0  # before: min_epochs=2 trained 8 steps after the "stopping" warning
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def fit_and_checkpoint(tmp_path, callbacks):
    L.seed_everything(0)
    m = module()
    t = trainer(callbacks, steps=2)
    t.fit(m, loader())
    path = tmp_path / "two_steps.ckpt"
    t.save_checkpoint(path)
    return path


def test_the_score_at_initialisation_survives_a_checkpoint_resume(tmp_path):
    first = EPEScore()
    path = fit_and_checkpoint(tmp_path, [first])
    assert math.isfinite(first.value)
    resumed = EPEScore(min_score=first.value)  # gated on the score at initialisation, not the trained one
    t = trainer([resumed], steps=4)
    t.fit(module(), loader(), ckpt_path=path)
    assert resumed.value == first.value and resumed.values == first.values
    assert t.global_step == 4 and t.callback_metrics["epe_score"].item() == pytest.approx(first.value)


def test_a_checkpoint_without_the_callbacks_state_is_not_scored(tmp_path):
    path = fit_and_checkpoint(tmp_path, [])
    callback = EPEScore(min_score=math.inf)
    t = trainer([callback], steps=3)
    with pytest.warns(UserWarning, match="EPEScore is not scoring: the fit resumes at step 2"):
        t.fit(module(), loader(), ckpt_path=path)
    assert callback.value is None and t.global_step == 3  # said so, and min_score not applied to a trained net


def test_scores_in_float32_whatever_the_trainers_precision():
    batch = next(iter(loader()))
    L.seed_everything(0)
    m = module()
    callback = EPEScore(batch=batch)
    t = L.Trainer(max_steps=1, accelerator="cpu", devices=1, precision="bf16-true", callbacks=[callback], logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    seen = {}
    original = callback._score

    def spy(pl_module, batches):  # the bf16 network the callback was handed, in float32
        seen["bf16"] = {k: v.clone() for k, v in pl_module.state_dict().items()}
        return original(pl_module, batches)

    callback._score = spy
    t.fit(m, loader())
    assert all(v.dtype == torch.bfloat16 for v in seen["bf16"].values() if v.is_floating_point())
    reference = module()
    reference.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in seen["bf16"].items()})
    assert callback.value == epe_score(reference, *batch)  # float32 arithmetic on the bf16 weights
    as_is = EPEScore(batch=batch, precision=None)._score(m, [batch])[0]  # m is bf16 after the fit
    assert as_is != callback.value
    with pytest.raises(ValueError, match="precision must be 'float32'"):
        EPEScore(precision="bf16")


# ---------------------------------------------------------------------------------------------
# min_score on a scale that does not grow with the batch size


def test_same_class_pairs_and_the_per_pair_value():
    from lightning_epe.callbacks import PER_PAIR_MAX, epe_per_pair, same_class_pairs

    assert same_class_pairs(torch.tensor([0, 0, 1, 1, 1, 2])) == 2 * 1 + 3 * 2 + 1 * 0
    assert same_class_pairs(torch.tensor([0, 1, 2])) == 0 and math.isnan(epe_per_pair(5.0, torch.tensor([0, 1])))
    L.seed_everything(0)
    m = module()
    x, y = next(iter(loader(n=64)))
    score = epe_score(m, x, y)
    assert epe_per_pair(score, y) == score / same_class_pairs(y)
    assert 0 < epe_per_pair(score, y) < PER_PAIR_MAX == pytest.approx(-math.log(1e-5))


def test_the_per_pair_value_does_not_grow_with_the_batch_size():
    """The raw EPE score grows about as sum_c n_c^2 (x16 from 32 to 128 samples); the per-pair value stays."""
    data = DataLoader(TensorDataset(torch.randn(128, 3, 8, 8, generator=torch.Generator().manual_seed(3)),
                                    torch.arange(128) % 4), batch_size=128)
    x, y = next(iter(data))
    raw, per_pair = {}, {}
    for size in (32, 64, 128):
        callback = EPEScore(batch=(x[:size], y[:size]), min_score=0.0, scale="per_pair")
        trainer([callback], steps=1).fit(module(), loader())
        raw[size], per_pair[size] = callback.value, callback.per_pair
    assert raw[128] / raw[32] > 10
    assert max(per_pair.values()) / min(per_pair.values()) < 1.15


def test_min_score_per_pair_refuses_below_and_trains_above():
    batch = next(iter(loader()))
    probe = EPEScore(batch=batch)
    trainer([probe], steps=1).fit(module(), loader())
    assert probe.per_pair == pytest.approx(probe.value / 48)  # 16 samples, 4 classes of 4: 4 * 4 * 3 pairs
    low = EPEScore(batch=batch, min_score=probe.per_pair - 0.01, scale="per_pair")
    t = trainer([low], steps=2)
    t.fit(module(), loader())
    assert t.global_step == 2  # the raw score (hundreds) is far above the threshold anyway
    high = EPEScore(batch=batch, min_score=probe.per_pair + 0.01, scale="per_pair")
    t = trainer([high], steps=2)
    with pytest.warns(UserWarning, match=r"epe score per same-class pair .* is below min_score="):
        t.fit(module(), loader())
    assert t.global_step == 0 and t.callback_metrics["epe_score_per_pair"].item() == pytest.approx(probe.per_pair)


def test_per_pair_draws_are_divided_by_their_own_batches_pairs():
    from lightning_epe.scores import Draws

    x, y = next(iter(DataLoader(TensorDataset(torch.randn(40, 3, 8, 8), torch.arange(40) % 4), batch_size=40)))
    batches = [(x[:16], y[:16]), (x[16:40], y[16:40])]  # 48 and 4 * 6 * 5 = 120 pairs
    callback = EPEScore(batch=batches, draws=Draws(k=2, over="batches"), scale="per_pair", min_score=0.0)
    trainer([callback], steps=1).fit(module(), loader())
    assert callback.per_pair_values == [callback.values[0] / 48, callback.values[1] / 120]
    assert callback.per_pair == pytest.approx(sum(callback.per_pair_values) / 2)


def test_the_per_pair_scale_is_for_epe_over_at_most_100_classes():
    with pytest.raises(ValueError, match="scale must be 'raw'"):
        EPEScore(scale="relative")
    for kwargs in ({"score": "naswot"}, {"score_options": {"class_count": "true"}},
                   {"score_options": {"class_count": 120}}):
        with pytest.raises(ValueError, match="normalises the EPE score of at most 100 classes"):
            EPEScore(min_score=3.0, scale="per_pair", **kwargs)
    assert EPEScore(scale="per_pair", score_options={"class_count": 10})._per_pair


def test_the_per_pair_value_survives_a_checkpoint_resume(tmp_path):
    first = EPEScore()
    path = fit_and_checkpoint(tmp_path, [first])
    resumed = EPEScore(min_score=first.per_pair, scale="per_pair")
    t = trainer([resumed], steps=4)
    t.fit(module(), loader(), ckpt_path=path)
    assert resumed.per_pair == first.per_pair and t.global_step == 4


@pytest.mark.parametrize("change", [{"score_options": {"class_count": "true"}}, {"draws": 2}, {"seed": 3}],
                         ids=["score_options", "draws", "seed"])
def test_a_checkpointed_score_is_restored_only_with_the_same_settings(change, tmp_path):
    first = EPEScore()
    path = fit_and_checkpoint(tmp_path, [first])
    same = EPEScore()
    trainer([same], steps=3).fit(module(), loader(), ckpt_path=path)
    assert same.value == first.value  # restored
    other = EPEScore(**change)
    key = next(iter(change))
    with pytest.warns(UserWarning, match=rf"the checkpoint's epe score was computed with other settings \({key} "
                                         r"differ.*so it is not restored: scoring again now, at step 2 \(the "
                                         r"network is trained"):
        trainer([other], steps=3).fit(module(), loader(), ckpt_path=path)
    assert other.value is not None and other.value != first.value


@pytest.mark.parametrize("min_score", [math.nan, "5", True], ids=["nan", "str", "bool"])
def test_min_score_is_checked_when_the_callback_is_made(min_score):
    with pytest.raises(ValueError, match=rf"EPEScore min_score must be a number \(on the scale 'raw'\) or None, got "
                                         rf"{re.escape(repr(min_score))}"):
        EPEScore(min_score=min_score)
    assert EPEScore(min_score=3)._min_score == 3 and EPEScore(min_score=-math.inf)._min_score == -math.inf
