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
