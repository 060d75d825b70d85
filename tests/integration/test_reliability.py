"""Reliability: bad input gives a clear error or a recorded failure, faults lose nothing, runs are
deterministic and leave the caller's state alone. The table of bad inputs is docs/reliability.md;
each row names its test (here or in the other test files)."""
import collections
import errno
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_epe import CandidateModule, EPEScore, selecting_output
from lightning_epe.cli import main
from lightning_epe.scores import epe_score
from lightning_epe.search import ArchitectureSearch, ConfigMismatchError, ResultsDirectoryBusy, ResultsStore
from lightning_epe.search import lock as lock_module
from lightning_epe.search import store as store_module
from lightning_epe.spaces import NB201Space
from lightning_epe.spaces.base import CandidateSpace

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "recipes" / "quickstart.yaml")
TINY = {"C": 2, "N": 1}
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
FAST = ["--search.budget", "4", "--search.build_options", json.dumps(TINY), "--search.batch_size", "16",
        "--search.progress", "false"]


def records_of(directory) -> list[dict]:
    return [json.loads(line) for line in (Path(directory) / "scores.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# Helpers reachable from YAML (class_path) as well as from Python


class BadData(L.LightningDataModule):
    """32 random 8x8 images of 4 classes, spoilt in the way ``kind`` says."""

    num_classes = 4

    def __init__(self, kind: str = "good", batch_size: int = 16):
        super().__init__()
        self.kind, self.batch_size = kind, batch_size
        g = torch.Generator().manual_seed(0)
        n = 1 if kind == "one_sample" else 32
        x, y = torch.randn(n, 3, 8, 8, generator=g), torch.arange(n) % 4
        if kind == "nan":
            x[:, 0, 0, 0] = math.nan
        elif kind == "inf":
            x[:, 1, 2, 3] = math.inf
        elif kind == "float_labels":
            y = y.float()
        elif kind == "negative_labels":
            y = y - 1
        elif kind == "labels_out_of_range":
            y = y + 4
        elif kind == "labels_wrong_shape":
            y = y[:, None]
        elif kind == "single_class":
            y = torch.zeros_like(y)
        elif kind == "one_sample_class":
            y = torch.arange(n) % 3
            y[-1] = 3  # class 3 has one sample
        self.dataset = TensorDataset(x, y)

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)


BAD_DATA = [  # kind, exception, message
    ("nan", ValueError, "NaN or inf"),
    ("inf", ValueError, "NaN or inf"),
    ("float_labels", TypeError, "integer class labels"),
    ("negative_labels", ValueError, ">= 0"),
    ("labels_out_of_range", ValueError, "label 7, out of range for num_classes=4"),
    ("labels_wrong_shape", ValueError, "shape"),
    ("one_sample", ValueError, "at least 2"),
]


class FaultySpace(CandidateSpace):
    """Trial t is candidate t: 1 runs out of (simulated CUDA) memory, 2 raises in forward, 3 fails to
    build, 4 has zero input gradients (all-none cell: NaN); the others are fine."""

    name = "faulty"

    def sample(self, n, seed=None, replace=True):
        return list(range(n))

    def build(self, candidate, num_classes=10, **options):
        if candidate == 3:
            raise KeyError("no such candidate 3")
        space = NB201Space()
        net = space.build(ALL_NONE if candidate == 4 else 1601, num_classes=num_classes, **TINY)
        if candidate in (1, 2):
            error = (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB") if candidate == 1
                     else ValueError("boom in forward"))

            def forward(x):
                raise error

            net.forward = forward
        return net


def check_faulty_records(records):
    by = {r["candidate"]: r for r in records}
    assert by[1]["error"].startswith("OutOfMemoryError: CUDA out of memory") and by[1]["score"] is None
    assert by[2]["error"] == "ValueError: boom in forward" and "boom in forward" in by[2]["traceback"]
    assert by[3]["error"].startswith("KeyError") and by[3]["score"] is None
    assert by[4]["score"] is None and by[4]["error"] is None  # NaN: undefined, not failed
    assert all(by[c]["error"] is None and by[c]["score"] is not None for c in (0, 5))


# ---------------------------------------------------------------------------------------------
# Bad input: Python API


@pytest.mark.parametrize("kind, error, message", BAD_DATA, ids=[k for k, *_ in BAD_DATA])
@pytest.mark.parametrize("policy", ["fixed", "fresh"])
def test_bad_data_stops_the_search_before_any_candidate(kind, error, message, policy, tmp_path):
    search = ArchitectureSearch(budget=3, build_options=TINY, accelerator="cpu", progress=False,
                                batch_policy=policy, results_dir=str(tmp_path))
    search.space.build = lambda *a, **k: pytest.fail("a candidate was built on bad data")
    with pytest.raises(error, match=message) as info:
        search.run(BadData(kind))
    assert "BadData" in str(info.value)  # names where the batch came from
    assert not (tmp_path / "scores.jsonl").exists()


@pytest.mark.parametrize("kind", ["single_class", "one_sample_class"])
def test_a_single_class_or_a_one_sample_class_is_scored(kind):
    result = ArchitectureSearch(budget=2, build_options=TINY, accelerator="cpu", progress=False).run(BadData(kind))
    assert all(r["error"] is None and math.isfinite(r["score"]) for r in result.records)
    x, y = BadData(kind).dataset.tensors
    assert math.isfinite(epe_score(NB201Space().build(1601, num_classes=4, **TINY), x, y))


def test_failures_oom_and_nan_are_recorded_and_the_search_goes_on(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: pytest.fail("empty_cache called on CPU"))
    result = ArchitectureSearch(FaultySpace(), budget=6, accelerator="cpu", progress=False,
                                results_dir=str(tmp_path)).run(BadData())
    check_faulty_records(result.records)
    assert result.best["candidate"] in (0, 5)
    check_faulty_records(records_of(tmp_path))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["failed"], summary["nan"], summary["scored"]) == (3, 1, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_oom_on_gpu_empties_the_cache_and_goes_on(monkeypatch):
    calls = []
    original = torch.cuda.empty_cache
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1) or original())
    result = ArchitectureSearch(FaultySpace(), budget=6, accelerator="gpu", progress=False).run(BadData())
    check_faulty_records(result.records)
    assert calls == [1]


# ---------------------------------------------------------------------------------------------
# Bad input: command line (exit code and message)


def cli(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("candidate, message", [
    ("|bad|", "expected 3"),
    ("|conv5x5~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
     "unknown op 'conv5x5'.*valid ops: none"),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "node 2 has 1 edge"),
    ("15625", "out of range; valid indices are 0..15624"),
])
def test_cli_fit_bad_candidate(candidate, message, capsys):
    code, _, err = cli(capsys, "fit", "--config", QUICKSTART, "--candidate", candidate, "--trainer.max_epochs", "1")
    assert code == 1
    assert err.startswith("lightning-epe fit: error:") and re.search(message, err), err


@pytest.mark.parametrize("kind, _error, message", BAD_DATA, ids=[k for k, *_ in BAD_DATA])
def test_cli_score_bad_data(kind, _error, message, capsys, tmp_path):
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path), *FAST,
                       "--data", f"{__name__}.BadData", "--data.kind", kind)
    assert code == 1 and "lightning-epe score: error:" in err
    assert message.split(",")[0] in err, err


def test_cli_labels_out_of_range_for_num_classes_and_batch_of_one(capsys, tmp_path):
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path / "a"), *FAST,
                       "--search.num_classes", "3")
    assert code == 1 and "out of range for num_classes=3" in err
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path / "b"), *FAST,
                       "--search.batch_size", "1")
    assert code == 1 and "batch_size (--search.batch_size) must be an int >= 2" in err and "got 1" in err


def test_cli_failing_candidates_are_recorded_and_the_search_goes_on(capsys, tmp_path):
    code, out, _ = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path),
                       "--search.space", f"{__name__}.FaultySpace", "--search.budget", "6",
                       "--search.batch_size", "16", "--search.progress", "false")
    assert code == 0 and "best" in out
    check_faulty_records(records_of(tmp_path))


@pytest.mark.parametrize("yaml_text, code, message", [
    ("search:\n  budgett: 3\n", 2, "budgett"),
    ("search:\n  budget: lots\n", 2, "search.budget"),
    ("search:\n  build_options: 3\n", 2, "search.build_options"),
    ("colour: blue\n", 2, "colour"),
    ("search:\n  space:\n    class_path: lightning_epe.spaces.TimmSpace\n    init_args:\n      models: [resnet181]\n",
     1, "unknown timm model 'resnet181'. Closest known names: resnet18"),
])
def test_cli_bad_yaml(yaml_text, code, message, capsys, tmp_path):
    (tmp_path / "bad.yaml").write_text(yaml_text)
    got, _, err = cli(capsys, "score", "--config", QUICKSTART, "--config", str(tmp_path / "bad.yaml"),
                      "--results_dir", str(tmp_path / "results"), *FAST[2:])
    assert got == code and message in err, err


def test_cli_unwritable_results_dir(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path / "file" / "sub"),
                       *FAST)
    assert code == 1 and "is not writable" in err and "--results_dir" in err


def test_cli_changed_config_is_refused_and_leaves_the_directory_alone(capsys, tmp_path):
    assert cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path), *FAST)[0] == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path), *FAST,
                       "--search.seed", "5")
    assert code == 1 and "different configuration (changed: seed)" in err and "--search.force true" in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# ---------------------------------------------------------------------------------------------
# Faults: disk full, kill -9, Ctrl-C


class DiskFullOnAppend:
    """``open`` for store.py: the ``fail_at``-th line appended (to any file opened for appending) writes
    half of itself, then ENOSPC."""

    def __init__(self, fail_at: int):
        self.appends, self.fail_at = 0, fail_at

    def __call__(self, path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return _FillingFile(f, self) if "a" in mode else f


class _FillingFile:
    def __init__(self, file, disk: DiskFullOnAppend):
        self._file, self._disk = file, disk

    def write(self, data):
        self._disk.appends += 1
        if self._disk.appends == self._disk.fail_at:
            self._file.write(data[: len(data) // 2])
            self._file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self._file.write(data)

    def __getattr__(self, name):
        return getattr(self._file, name)


@pytest.mark.parametrize("truncate_fails", [False, True])
def test_disk_full_is_a_clear_error_and_damages_nothing(truncate_fails, tmp_path, monkeypatch):
    options = dict(budget=6, build_options=TINY, accelerator="cpu", progress=False, results_dir=str(tmp_path))
    monkeypatch.setattr(store_module, "open", DiskFullOnAppend(fail_at=4), raising=False)
    if truncate_fails:
        monkeypatch.setattr(store_module.os, "truncate", lambda *a: (_ for _ in ()).throw(OSError(errno.EIO, "EIO")))
    with pytest.raises(OSError) as info:
        ArchitectureSearch(**options).run(BadData())
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert str(tmp_path / "scores.jsonl") in message and "disk is full" in message
    assert "3 records already there are intact" in message and "run the same command again to resume" in message
    data = (tmp_path / "scores.jsonl").read_text()
    if truncate_fails:  # the torn half line stays until the next start cuts it off
        assert not data.endswith("\n") and data.count("\n") == 3
    else:
        assert data.endswith("\n") and len(data.splitlines()) == 3
    assert [r["trial"] for r in records_of_prefix(data)] == [0, 1, 2]
    config = (tmp_path / "config.json").read_text()
    monkeypatch.undo()
    resumed = ArchitectureSearch(**options).run(BadData())  # space freed: the same call resumes
    assert [r["trial"] for r in records_of(tmp_path)] == list(range(6))
    assert (tmp_path / "config.json").read_text() == config
    full = ArchitectureSearch(**dict(options, results_dir=None)).run(BadData())
    assert [r["score"] for r in resumed.records] == [r["score"] for r in full.records]


@pytest.mark.parametrize("sync_seconds, fsyncs_while_appending", [(0.0, 5), (3600.0, 0)])
def test_each_record_reaches_the_file_at_once_and_fsyncs_are_batched(sync_seconds, fsyncs_while_appending,
                                                                   tmp_path, monkeypatch):
    """A record is in the file (the operating system's) when append returns: a process killed then loses
    nothing. fsync: every record with SYNC_SECONDS 0, else at most SYNC_SECONDS later, and at close."""
    monkeypatch.setattr(store_module, "SYNC_SECONDS", sync_seconds)
    fsyncs = []
    real_fsync = os.fsync
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: fsyncs.append(fd) or real_fsync(fd))
    store = ResultsStore(tmp_path)
    fsyncs.clear()  # (the lock's)
    for trial in range(5):
        store.append({"trial": trial, "candidate": trial, "score": 1.0 * trial, "error": None})
        assert [r["trial"] for r in records_of(tmp_path)] == list(range(trial + 1))
    assert len(fsyncs) == fsyncs_while_appending
    store.close()
    assert len(fsyncs) == fsyncs_while_appending + 1
    assert [r["score"] for r in records_of(tmp_path)] == [0.0, 1.0, 2.0, 3.0, 4.0]


def records_of_prefix(data: str) -> list[dict]:
    return [json.loads(line) for line in data.split("\n")[:-1]]


def test_disk_full_while_replacing_a_file_keeps_the_old_version(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    store_module.write_json_atomic(target, {"best": 1})

    def full_open(path, mode="r", *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store_module, "open", full_open, raising=False)
    with pytest.raises(OSError, match="could not write .*summary.json: the disk is full.*previous version"):
        store_module.write_json_atomic(target, {"best": 2})
    assert json.loads(target.read_text()) == {"best": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_disk_full_through_the_cli(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(store_module, "open", DiskFullOnAppend(fail_at=2), raising=False)
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path), *FAST)
    assert code == 1 and "disk is full" in err and "run the same command again to resume" in err
    assert len(records_of(tmp_path)) == 1


KILL_ARGS = ["score", "--config", QUICKSTART, "--search.budget", "20", "--search.build_options", json.dumps(TINY),
             "--search.batch_size", "64", "--search.progress", "false"]


def start_cli(results_dir) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_epe.cli", *KILL_ARGS, "--results_dir", str(results_dir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as in a terminal, even under nohup
    )


def interrupt_after(process, scores: Path, lines: int, sig: int, timeout: float = 300) -> tuple[int, str]:
    """Send ``sig`` as soon as ``scores`` holds ``lines`` lines; return the exit code and stderr."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if scores.exists() and scores.read_bytes().count(b"\n") >= lines:
            process.send_signal(sig)
            break
        time.sleep(0.005)
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_kill_and_ctrl_c_then_rerun_equals_an_uninterrupted_run(tmp_path, capsys):
    """A smaller CI version of bench/kill_resume.py: SIGKILL, Ctrl-C, a torn line, SIGKILL, rerun.

    Every process scores on one thread (tiny networks; on a busy machine more threads only wait)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check_kill_and_ctrl_c(tmp_path, capsys)
    finally:
        torch.set_num_threads(threads)


def check_kill_and_ctrl_c(tmp_path, capsys):
    results = tmp_path / "run"
    scores = results / "scores.jsonl"
    code, _ = interrupt_after(start_cli(results), scores, 3, signal.SIGKILL)
    assert code == -signal.SIGKILL
    code, err = interrupt_after(start_cli(results), scores, 8, signal.SIGINT)
    assert code == 130, err
    assert "interrupted" in err and "rerun the same command to resume" in err
    with open(scores, "ab") as f:  # the moment a record is being written: a torn last line
        f.write(b'{"arch": "|nor_conv_3x3~0|+|nor_con')
    code, _ = interrupt_after(start_cli(results), scores, 13, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert cli(capsys, *KILL_ARGS, "--results_dir", str(results))[0] == 0  # the same command, to the end
    assert cli(capsys, *KILL_ARGS, "--results_dir", str(tmp_path / "whole"))[0] == 0  # uninterrupted
    lines = scores.read_text().splitlines()
    resumed = [json.loads(line) for line in lines]  # every line parses
    whole = records_of(tmp_path / "whole")
    assert sorted(r["trial"] for r in resumed) == list(range(20))  # each candidate exactly once
    score_of = lambda rs: {r["trial"]: (r["candidate"], r["score"]) for r in rs}  # noqa: E731
    assert score_of(resumed) == score_of(whole)  # bitwise, across processes
    summaries = [json.loads((d / "summary.json").read_text())["best"] for d in (results, tmp_path / "whole")]
    assert summaries[0] == summaries[1]


# ---------------------------------------------------------------------------------------------
# Determinism and isolation


def global_state() -> dict:
    cudnn = torch.backends.cudnn
    state = {
        "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(), "python_rng": random.getstate(),
        "cudnn": (cudnn.enabled, cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32),
        "matmul": (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "grad": torch.is_grad_enabled(), "dtype": torch.get_default_dtype(), "threads": torch.get_num_threads(),
    }
    getter = getattr(torch._C, "_get_fp32_precision_getter", None)
    if getter is not None:  # torch >= 2.9: per-backend float32 precision
        state["fp32"] = [getter(backend, op) for backend in ("cuda", "mkldnn") for op in ("conv", "matmul", "rnn")]
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def assert_same_global_state(before, after):
    assert before.keys() == after.keys()
    for key in before:
        a, b = before[key], after[key]
        if key == "torch_rng":
            assert torch.equal(a, b), key
        elif key == "cuda_rng":
            assert all(torch.equal(x, y) for x, y in zip(a, b)), key
        elif key == "numpy_rng":
            assert a[0] == b[0] and np.array_equal(a[1], b[1]) and a[2:] == b[2:], key
        else:
            assert a == b, key


def model_state(model) -> dict:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict(keep_vars=True).items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "modes": [m.training for m in model.modules()],
    }


def assert_same_model(before, after):
    assert before["tensors"].keys() == after["tensors"].keys()
    for k in before["tensors"]:
        assert torch.equal(before["tensors"][k], after["tensors"][k]), k
    for a, b in zip(before["grads"], after["grads"], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    assert before["requires_grad"] == after["requires_grad"] and before["modes"] == after["modes"]


@pytest.mark.parametrize("policy", ["fixed", "fresh"])
def test_search_is_bitwise_deterministic_and_leaves_global_state_alone(policy, tmp_path):
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    user_precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # a user setting: scoring switches it off, then back
    try:
        before = global_state()
        runs = [ArchitectureSearch(budget=4, build_options=TINY, accelerator="cpu", progress=False, batch_policy=policy,
                                   results_dir=str(tmp_path / str(i))).run(BadData()).records for i in range(2)]
        assert_same_global_state(before, global_state())
    finally:
        torch.set_float32_matmul_precision(user_precision)
    assert [r["score"] for r in runs[0]] == [r["score"] for r in runs[1]]
    assert all(r["score"] is not None for r in runs[0])


def fake_trainer(batch_size=16):
    """What the callback uses of a one-process Trainer (its strategy reduces a decision to itself)."""
    one_process = types.SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision)
    return types.SimpleNamespace(train_dataloader=BadData(batch_size=batch_size).train_dataloader(),
                                 callback_metrics={}, loggers=[], global_step=0, should_stop=False,
                                 strategy=one_process)


def test_callback_leaves_model_and_global_state_as_found():
    torch.manual_seed(0)
    module = CandidateModule(1601, num_classes=4, build_options={"C": 4, "N": 1})
    x, y = BadData().dataset.tensors
    torch.nn.functional.cross_entropy(module(x[:8]), y[:8]).backward()  # existing grads
    module.net.cells[0].requires_grad_(False)
    module.eval()
    module.net.stem.train()
    np.random.seed(7), random.seed(7)
    before_model, before_global = model_state(module), global_state()
    callback = EPEScore()
    callback.on_train_start(fake_trainer(), module)
    assert math.isfinite(callback.value)
    assert_same_model(before_model, model_state(module))
    assert_same_global_state(before_global, global_state())


def test_callback_zero_gradient_network_warns_and_stops(recwarn):
    module = CandidateModule(ALL_NONE, num_classes=4, build_options={"C": 4, "N": 1})
    trainer = fake_trainer()
    callback = EPEScore(min_score=0.0)
    callback.on_train_start(trainer, module)
    assert math.isnan(callback.value) and trainer.should_stop
    assert any("NaN" in str(w.message) for w in recwarn)


@pytest.mark.parametrize("kind, error, message", [
    ("nan", ValueError, "NaN or inf"), ("float_labels", TypeError, "integer class labels"),
    ("labels_wrong_shape", ValueError, "shape"),
])
def test_callback_bad_batches_are_clear_errors(kind, error, message):
    module = CandidateModule(1601, num_classes=4, build_options={"C": 4, "N": 1})
    trainer = fake_trainer()
    trainer.train_dataloader = BadData(kind).train_dataloader()
    with pytest.raises(error, match=message):
        EPEScore().on_train_start(trainer, module)
    trainer.train_dataloader = [{"image": torch.zeros(2, 3, 8, 8), "label": torch.zeros(2)}]
    with pytest.raises(TypeError, match="pass batch=\\(inputs, targets\\)"):
        EPEScore().on_train_start(trainer, module)


# ---------------------------------------------------------------------------------------------
# Round two (issue 14): one configuration and one writer per results directory, damaged files,
# edge values, signals, errors with context, NaN with a reason, explicit output selection


def small_search(results_dir=None, **options) -> ArchitectureSearch:
    defaults = dict(budget=3, build_options=TINY, accelerator="cpu", progress=False,
                    results_dir=None if results_dir is None else str(results_dir))
    return ArchitectureSearch(**{**defaults, **options})


def snapshot(directory) -> dict:
    """Every file under ``directory`` (relative path -> bytes)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def no_rescoring(search: ArchitectureSearch) -> ArchitectureSearch:
    search.score_candidate = lambda *a, **k: pytest.fail("a stored trial was scored again")
    return search


@pytest.mark.parametrize("route", ["config_json_deleted", "forced"])
def test_resume_with_another_score_never_mixes_records(route, tmp_path):
    small_search(tmp_path).run(BadData())
    epe_lines = (tmp_path / "scores.jsonl").read_bytes()
    if route == "config_json_deleted":
        (tmp_path / "config.json").unlink()
        refusal = "config.json is missing or damaged and the records were scored by 1 other configuration"
    else:
        refusal = "different configuration (changed: score)"
    before = snapshot(tmp_path)
    with pytest.raises(ConfigMismatchError, match=re.escape(refusal)):
        small_search(tmp_path, score="naswot").run(BadData())
    assert snapshot(tmp_path) == before  # refused: nothing touched
    result = small_search(tmp_path, score="naswot", force=True).run(BadData())
    assert (tmp_path / "previous" / "1" / "scores.jsonl").read_bytes() == epe_lines  # kept, byte for byte
    records = records_of(tmp_path)
    assert [r["trial"] for r in records] == [0, 1, 2] and len({r["config_id"] for r in records}) == 1
    alone = small_search(score="naswot").run(BadData())  # the same search in an empty directory
    assert [r["score"] for r in records] == [r["score"] for r in alone.records]
    assert json.loads((tmp_path / "config.json").read_text())["score"] == "naswot"
    assert json.loads((tmp_path / "summary.json").read_text())["best"]["score"] == result.best["score"]
    no_rescoring(small_search(tmp_path, score="naswot")).run(BadData())  # and it resumes as itself


def test_force_keeps_records_scored_the_same_way_and_moves_the_others(tmp_path):
    small_search(tmp_path, search_strategy="random").run(BadData())
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    # a larger budget: the 3 records are what the new configuration would score first: continued
    assert len(small_search(tmp_path, budget=5, force=True).run(BadData()).records) == 5
    assert (tmp_path / "scores.jsonl").read_text().splitlines()[:3] == lines and not (tmp_path / "previous").exists()
    # another strategy proposes other candidates for the stored trials: moved aside, scored afresh
    result = small_search(tmp_path, budget=4, search_strategy="exhaustive", force=True).run(BadData())
    assert [r["candidate"] for r in result.records] == [0, 1, 2, 3]
    assert len(records_of(tmp_path / "previous" / "1")) == 5 and len(records_of(tmp_path)) == 4


def lock_holder(directory) -> subprocess.Popen:
    """Another process holding the directory's lock (lock.py alone: it needs nothing but the stdlib)."""
    code = ("import importlib.util, sys, time\n"
            f"spec = importlib.util.spec_from_file_location('lock', {str(Path(lock_module.__file__))!r})\n"
            "lock = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock)\n"
            f"lock.DirectoryLock(lock.Path({str(directory)!r})).acquire()\n"
            "print('locked', flush=True); time.sleep(600)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_one_writer_per_results_directory_and_a_killed_holder_is_taken_over(capsys, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    holder = lock_holder(tmp_path)
    try:
        code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path), *FAST)
        assert code == 1 and "is in use by another search" in err
        assert f"pid {holder.pid} on host {socket.gethostname()}" in err and "choose another results directory" in err
        assert not (tmp_path / "scores.jsonl").exists() and not (tmp_path / "config.json").exists()
        with pytest.raises(ResultsDirectoryBusy, match=f"pid {holder.pid}"):
            small_search(tmp_path).run(BadData())
    finally:
        holder.kill()
        holder.wait()
    assert json.loads((tmp_path / "lock").read_text())["pid"] == holder.pid  # left behind by the kill: stale
    with pytest.warns(RuntimeWarning, match=f"took over the lock .* left by pid {holder.pid}"):
        small_search(tmp_path).run(BadData())
    assert [r["trial"] for r in records_of(tmp_path)] == [0, 1, 2] and not (tmp_path / "lock").exists()


def test_a_refused_forced_run_leaves_the_directory_usable(tmp_path):
    small_search(tmp_path).run(BadData())
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="out of range for num_classes=3"):  # found after the config check
        small_search(tmp_path, score="naswot", num_classes=3, force=True).run(BadData())
    assert snapshot(tmp_path) == before  # config.json not rewritten, nothing moved aside
    no_rescoring(small_search(tmp_path)).run(BadData())  # the old command still runs


def test_a_fixed_build_options_typo_scores_the_failed_records_again(tmp_path):
    with pytest.raises(RuntimeError, match="none of the 3 candidates got a score"):
        small_search(tmp_path, build_options={"C": 2, "NN": 1}).run(BadData())
    assert all("unexpected keyword argument 'NN'" in r["error"] for r in records_of(tmp_path))
    with pytest.raises(ConfigMismatchError, match="changed: build_options.*Every one of its 3 records failed.*"
                                                  "force=True scores them again"):
        small_search(tmp_path).run(BadData())
    result = small_search(tmp_path, force=True).run(BadData())
    assert all(r["error"] is None for r in result.records)
    assert [r["score"] for r in result.records] == [r["score"] for r in small_search().run(BadData()).records]
    assert all(r["error"] for r in records_of(tmp_path / "previous" / "1"))  # the failures, kept apart


def test_an_empty_summary_or_config_json_is_rebuilt_with_a_warning(tmp_path):
    first = small_search(tmp_path).run(BadData())
    config = (tmp_path / "config.json").read_text()
    (tmp_path / "summary.json").write_text("")
    (tmp_path / "config.json").write_text("")
    with pytest.warns(RuntimeWarning) as warned:
        no_rescoring(small_search(tmp_path)).run(BadData())  # the records' config_id vouch for them
    messages = [str(w.message) for w in warned]
    assert any(f"{tmp_path / 'config.json'} is damaged (empty)" in m for m in messages)
    assert any(f"{tmp_path / 'summary.json'} is damaged (empty); it is rebuilt" in m for m in messages)
    assert (tmp_path / "config.json").read_text() == config
    assert json.loads((tmp_path / "summary.json").read_text())["best"]["score"] == first.best["score"]


@pytest.mark.parametrize("args, message", [
    (["--search.batch_size", "0"], "batch_size (--search.batch_size) must be an int >= 2"),
    (["--search.num_classes", "0"], "num_classes (--search.num_classes) must be an int >= 1"),
    (["--results_dir", ""], "results_dir (--results_dir) must be a directory path, got an empty string"),
], ids=["batch_size_0", "num_classes_0", "results_dir_empty"])
def test_cli_zero_sizes_and_an_empty_results_dir_are_refused(args, message, capsys, tmp_path):
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--results_dir", str(tmp_path), *FAST, *args)
    assert code == 1 and message in err, err
    assert not (tmp_path / "scores.jsonl").exists()


def test_cli_results_dir_with_a_tilde_is_in_the_home_directory(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    code, out, _ = cli(capsys, "score", "--config", QUICKSTART, *FAST, "--search.budget", "2",
                       "--results_dir", "~/runs/x")
    assert code == 0 and len(records_of(tmp_path / "home" / "runs" / "x")) == 2
    assert not (tmp_path / "~").exists()  # (the working directory is tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_during_start_up_ends_cleanly(delay, tmp_path):
    process = start_cli(tmp_path / "run")
    time.sleep(delay)  # importing torch and Lightning, building the parser
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and "KeyboardInterrupt" not in err


class Faulty(nn.Module):
    """A network whose forward fails in the way ``kind`` says."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        device = "meta" if kind == "meta" else None
        self.conv, self.fc = nn.Conv2d(3, 4, 3, device=device), nn.Linear(4, 4, device=device)
        self.flat = nn.Linear(192, 4)

    def forward(self, x):
        if self.kind == "wrong_input_rank":
            return self.flat(x)  # expects flattened images
        if self.kind == "no_grad":
            with torch.no_grad():
                return self.fc(self.conv(x).mean((2, 3)))
        logits = self.fc(self.conv(x).mean((2, 3)))
        return logits.mean() if self.kind == "scalar_output" else logits


FORWARD_FAULTS = [  # kind, exception, its own message, the likely cause given in the context
    ("wrong_input_rank", RuntimeError, "mat1 and mat2", "does not accept inputs of this shape"),
    ("no_grad", RuntimeError, "does not require grad", "torch.no_grad()"),
    ("scalar_output", ValueError, r"shape \(B, classes\), got shape \(\)", ""),
    ("meta", RuntimeError, "", "'meta' device"),
]


@pytest.mark.parametrize("kind, error, message, cause", FORWARD_FAULTS, ids=[f[0] for f in FORWARD_FAULTS])
def test_errors_inside_forward_come_with_context(kind, error, message, cause, tmp_path):
    with pytest.raises(error, match=message) as info:  # the callback: re-raised, same type and message
        EPEScore().on_train_start(fake_trainer(), Faulty(kind))
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "Faulty at the start of training (EPEScore)" in notes and "'epe' score" in notes
    assert "on inputs of shape (16, 3, 8, 8), float32" in notes and "logits of shape (B, classes)" in notes
    assert cause in notes

    class FaultySpaceOf(FaultySpace):
        def build(self, candidate, num_classes=10, **options):
            return Faulty(kind)

    stored = ArchitectureSearch(FaultySpaceOf(), budget=1, accelerator="cpu", progress=False,
                                results_dir=str(tmp_path))
    with pytest.raises(RuntimeError, match="none of the 1 candidates"):  # the search: recorded with the context
        stored.run(BadData())
    (failed,) = records_of(tmp_path)
    assert failed["error"] and "candidate 0 (Faulty)" in failed["context"]
    assert cause in failed["context"] and failed["context"] in failed["traceback"]


class DistinctLabels(L.LightningDataModule):
    """16 images, one per class, of 200 classes."""

    num_classes = 200

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.dataset = TensorDataset(torch.randn(16, 3, 8, 8, generator=g), torch.arange(16) * 7)

    def train_dataloader(self):
        return DataLoader(self.dataset, batch_size=16)


def test_nan_scores_say_why(tmp_path):
    result = ArchitectureSearch(FaultySpace(), budget=6, accelerator="cpu", progress=False).run(BadData())
    by = {r["candidate"]: r for r in result.records}
    assert "constant (e.g. zero: the output does not depend on the input" in by[4]["reason"]
    assert all("reason" not in by[c] for c in (0, 5))
    # class_count="true" with 200 logits and one sample per class: the > 100 branch drops every class
    search = small_search(tmp_path, budget=2, score_options={"class_count": "true"}, batch_size=16)
    with pytest.raises(RuntimeError, match="none of the 2 candidates got a score"):
        search.run(DistinctLabels())
    for record in records_of(tmp_path):
        assert record["score"] is None and record["error"] is None
        assert "gives 200 classes (> 100" in record["reason"] and "every class in this batch of 16" in record["reason"]


def test_outputs_that_are_not_batch_by_classes_are_refused():
    class PerSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = NB201Space().build(1601, num_classes=4, **TINY)

        def forward(self, x):
            return self.net(x)[1][:, 0]  # (B,): the batch size would be taken as the class count

    x, y = BadData().dataset.tensors
    with pytest.raises(ValueError, match=r"logits of shape \(B, classes\), got shape \(32,\)"):
        epe_score(PerSample(), x, y, class_count="true")


class Heads(nn.Module):
    """Logits and two auxiliary heads, as torchvision's GoogLeNet in train mode: a plain tuple or a namedtuple."""

    Outputs = collections.namedtuple("Outputs", ["logits", "aux2", "aux1"])

    def __init__(self, named: bool = False):
        super().__init__()
        self.named = named
        self.net = NB201Space().build(1601, num_classes=4, **TINY)

    def forward(self, x):
        logits = self.net(x)[1]
        heads = (logits, logits * 3.0 + 1.0, logits.square())
        return self.Outputs(*heads) if self.named else heads


def test_output_selection_is_explicit_and_ambiguous_tuples_are_refused(tmp_path):
    x, y = BadData().dataset.tensors
    torch.manual_seed(0)
    heads = Heads()
    plain = epe_score(heads.net, x, y)  # NB201's (features, logits): the logits
    with pytest.raises(TypeError, match="ambiguous.*choose with output=: an index"):
        epe_score(heads, x, y)
    with selecting_output(0):
        assert epe_score(heads, x, y) == plain
    with selecting_output(lambda out: out[0]):
        assert epe_score(heads, x, y) == plain
    named = Heads(named=True)
    named.load_state_dict(heads.state_dict())
    assert epe_score(named, x, y) == plain  # .logits is recognised
    with selecting_output("aux1"):
        assert epe_score(named, x, y) != plain
    callback = EPEScore(output=0)
    callback.on_train_start(fake_trainer(), heads)
    reference = EPEScore()
    reference.on_train_start(fake_trainer(), heads.net)
    assert callback.value == reference.value

    class HeadsSpace(FaultySpace):
        def build(self, candidate, num_classes=10, **options):
            return Heads()

    result = ArchitectureSearch(HeadsSpace(), budget=2, accelerator="cpu", progress=False, output=0,
                                results_dir=str(tmp_path)).run(BadData())
    assert all(r["error"] is None for r in result.records)
    assert json.loads((tmp_path / "config.json").read_text())["output"] == 0
    with pytest.raises(TypeError, match="output must be None, an int index"):
        ArchitectureSearch(output=2.5)


# ---------------------------------------------------------------------------------------------
# Round three (issue 22): no silent wrong value, clear messages


def test_a_pair_of_one_shape_is_ambiguous_and_a_pair_of_two_shapes_is_features_and_logits():
    x, y = BadData().dataset.tensors
    torch.manual_seed(0)
    net = NB201Space().build(1601, num_classes=4, **TINY)

    class LogitsAndAux(nn.Module):  # torchvision's (logits, aux) convention: the aux head was scored before
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            logits = self.net(x)[1]
            return logits, logits.square()

    plain = epe_score(net, x, y)  # NB201's (features (B, 8), logits (B, 4)): two shapes, the logits
    with pytest.raises(TypeError, match=r"two outputs of one shape.*\(logits, aux\).*choose with output="):
        epe_score(LogitsAndAux(), x, y)
    with selecting_output(0):
        assert epe_score(LogitsAndAux(), x, y) == plain


class ReturnsThis(nn.Module):
    def forward(self, x):
        return x.flatten(1)[:, :4]


@pytest.mark.parametrize("value", [True, "2.5", None, 1 + 2j, "tensor3"], ids=["bool", "str", "none", "complex",
                                                                            "tensor3"])
def test_a_score_function_must_return_a_real_number(value, tmp_path):
    from lightning_epe.scores import register_score, score_many, score_module, unregister_score

    returned = torch.ones(3) if value == "tensor3" else value

    @register_score("returns_odd", needs_labels=False)
    def returns_odd(model, inputs, targets=None):
        return returned

    try:
        x, y = BadData().dataset.tensors
        with pytest.raises(TypeError, match="the score function 'returns_odd' .*returns_odd.* returned .*a score "
                                            "must be a real number"):
            score_module(ReturnsThis(), [(x, y)], score="returns_odd")
        with pytest.raises(TypeError, match="the score function 'returns_odd'"):
            score_many(ReturnsThis(), x, y, names=["returns_odd"])
        result = ArchitectureSearch(budget=2, build_options=TINY, accelerator="cpu", progress=False,
                                    score="returns_odd", results_dir=str(tmp_path))
        with pytest.raises(RuntimeError, match="none of the 2 candidates got a score"):
            result.run(BadData())
        assert all("the score function 'returns_odd'" in r["error"] for r in records_of(tmp_path))
    finally:
        unregister_score("returns_odd")


@pytest.mark.parametrize("value", [np.float32(2.5), np.int64(3), torch.tensor(4.0), 5], ids=str)
def test_numpy_scalars_and_0d_tensors_are_scores(value):
    from lightning_epe.scores import register_score, score_module, unregister_score

    register_score("returns_real", needs_labels=False)(lambda model, inputs, targets=None: value)
    try:
        x, y = BadData().dataset.tensors
        assert score_module(ReturnsThis(), [(x, y)], score="returns_real") == [float(value)]
    finally:
        unregister_score("returns_real")


def test_score_many_and_score_module_refuse_the_wrong_containers():
    from lightning_epe.scores import score_many, score_module

    x, y = BadData().dataset.tensors
    net = NB201Space().build(1601, num_classes=4, **TINY)
    with pytest.raises(TypeError, match=r"names must be a list of score names.*names=\['epe'\]"):
        score_many(net, x, y, names="epe")
    with pytest.raises(TypeError, match=r"batch 0 must be an \(inputs, targets\) pair of tensors \('epe' needs "
                                        r"labels\), got a tensor of shape \(32, 3, 8, 8\)"):
        score_module(net, [x])
    with pytest.raises(TypeError, match="a list of \\(inputs, targets\\) batches, got a tensor"):
        score_module(net, x)
    assert score_module(net, [(x, None)], score="naswot")  # no labels: targets None


def test_the_recorded_context_reads_well_and_names_an_unbuilt_network(tmp_path):
    class BuildFails(FaultySpace):
        def build(self, candidate, num_classes=10, **options):
            raise ValueError("no such network")

    with pytest.raises(RuntimeError, match="none of the 2"):
        ArchitectureSearch(BuildFails(), budget=2, accelerator="cpu", progress=False,
                           results_dir=str(tmp_path)).run(BadData())
    context = records_of(tmp_path)[0]["context"]
    assert "(a BuildFails network, not built: its build failed) with the 'epe' score on inputs of shape" in context


class Endless:
    """A strategy of one's own that ignores the budget: it proposes ``make(i)`` for ever (or nothing)."""

    def __init__(self, make=lambda i: i % 7, nothing: bool = False):
        self.make, self.nothing = make, nothing

    def setup(self, space, budget, seed):
        self.asked = 0

    def ask(self):
        if self.nothing:
            return None
        self.asked += 1
        return self.make(self.asked - 1)

    def tell(self, candidate, score):
        pass


def test_the_loop_enforces_the_budget_whatever_the_strategy_does(tmp_path):
    strategy = Endless()
    with pytest.warns(RuntimeWarning, match=r"keeps proposing candidates after the budget of 3: the search stops"):
        result = small_search(tmp_path, search_strategy=strategy).run(BadData())
    assert [r["candidate"] for r in result.records] == [0, 1, 2] and len(records_of(tmp_path)) == 3
    with pytest.warns(RuntimeWarning, match="keeps proposing"):  # a resume replays the 3 and scores nothing more
        assert len(no_rescoring(small_search(tmp_path, search_strategy=Endless())).run(BadData()).records) == 3


def test_candidates_are_checked_when_they_are_asked(tmp_path):
    numpy_ints = Endless(make=lambda i: np.int64(i))  # numpy scalars are normalised to JSON's numbers
    with pytest.warns(RuntimeWarning, match="keeps proposing"):
        result = small_search(tmp_path / "a", search_strategy=numpy_ints).run(BadData())
    assert [type(r["candidate"]) for r in result.records] == [int] * 3
    assert [r["candidate"] for r in records_of(tmp_path / "a")] == [0, 1, 2]
    scored = []
    odd = small_search(tmp_path / "b", search_strategy=Endless(make=lambda i: object()))
    odd.score_candidate = lambda *a: scored.append(a)
    with pytest.raises(TypeError, match=r"search strategy '[\w.]*test_reliability.Endless' proposed <object object .*> "
                                        r"\(a object\) at trial 0: a candidate must be JSON-able.*refused before"):
        odd.run(BadData())
    assert scored == [] and not (tmp_path / "b" / "scores.jsonl").exists()
    with pytest.raises(TypeError, match=r"proposed \(1, nan\)"):
        small_search(search_strategy=Endless(make=lambda i: (1, math.nan))).run(BadData())


def test_a_strategy_that_proposes_nothing_is_a_clear_error():
    with pytest.raises(RuntimeError, match=r"search strategy '[\w.]*test_reliability.Endless' proposed no candidate "
                                           r"\(its first ask\(\) returned None\): nothing to score"):
        small_search(search_strategy=Endless(nothing=True)).run(BadData())


def test_a_stored_record_of_another_candidate_is_named_by_file_and_line(tmp_path):
    small_search(tmp_path).run(BadData())
    lines = (tmp_path / "scores.jsonl").read_text().splitlines()
    record = json.loads(lines[1])
    record["candidate"] = (record["candidate"] + 1) % 15625
    lines[1] = json.dumps(record)
    (tmp_path / "scores.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RuntimeError, match=rf"trial 1 in {re.escape(str(tmp_path / 'scores.jsonl'))}:2 scored "
                                           rf"{record['candidate']} but this search proposes"):
        small_search(tmp_path).run(BadData())


# ---------------------------------------------------------------------------------------------
# One writer for every command that writes (issue 22, part 2)


def test_a_failed_start_up_releases_the_lock_in_a_long_lived_process(tmp_path, monkeypatch):
    real_write = os.write

    def disk_full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock_module.os, "write", disk_full)
    with pytest.raises(OSError, match=rf"could not take the lock of results directory '{tmp_path}': writing "
                                      rf"{tmp_path / 'lock'} failed \(the disk is full \(or over quota\)\); nothing"):
        ResultsStore(tmp_path)
    monkeypatch.setattr(lock_module.os, "write", real_write)
    assert not (tmp_path / "lock").exists()
    with ResultsStore(tmp_path):  # the same process takes it again: nothing stayed locked
        pass
    # a start-up that fails later (config.json on a full disk) releases it too
    monkeypatch.setattr(store_module, "write_json_atomic", lambda *a: disk_full(0, b""))
    with pytest.raises(OSError, match="No space left"):
        small_search(tmp_path).run(BadData())
    monkeypatch.undo()
    assert len(small_search(tmp_path).run(BadData()).records) == 3


def fit_while(monkeypatch, during):
    """``fit_and_test`` replaced by a 'training' that runs ``during()`` and returns metrics."""
    import lightning_epe.module

    def training(trainer, datamodule, candidate, **options):
        during()
        return {"test_acc": 0.5, "test_loss": math.nan}

    monkeypatch.setattr(lightning_epe.module, "fit_and_test", training)


def test_fit_never_records_into_another_configuration_and_never_loses_a_training(tmp_path, monkeypatch):
    directory = tmp_path / "results"
    search = small_search(directory)
    search.run(BadData())
    # another configuration takes the directory over (force) while the best trains
    fit_while(monkeypatch, lambda: small_search(directory, seed=7, force=True).run(BadData()))
    with pytest.warns(RuntimeWarning, match=r"the training finished but is not recorded in .*summary.json: .*now "
                                            r"holds another configuration.*Nothing is lost: it is saved in "):
        assert search.fit(fake_trainer(), BadData())["test_acc"] == 0.5
    assert "trained" not in json.loads((directory / "summary.json").read_text())  # the seed-7 summary
    (saved,) = tmp_path.glob("results.fit-*.json")
    result = json.loads(saved.read_text())
    assert result["trained"] == search.result.best["candidate"] and result["test_accuracy"] == 0.5
    assert result["test_metrics"]["test_loss"] is None  # NaN as null
    # the directory is in use while the training is recorded: saved beside it too
    search = small_search(directory, seed=7)
    search.run(BadData())
    holder = lock_module.DirectoryLock(directory)
    fit_while(monkeypatch, holder.acquire)
    try:
        with pytest.warns(RuntimeWarning, match="is in use by another search.*Nothing is lost"):
            search.fit(fake_trainer(), BadData())
    finally:
        holder.release()
    assert len(list(tmp_path.glob("results.fit-*.json"))) == 2  # (a second one never overwrites the first)
    # and when nothing changed, the training goes into the summary
    fit_while(monkeypatch, lambda: None)
    search.fit(fake_trainer(), BadData())
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["trained"] == search.result.best["candidate"] and summary["test_metrics"]["test_loss"] is None


class NoTell:
    """Not a Strategy: ``tell`` is missing."""

    def __init__(self, k: int = 1):
        self.k = k

    def setup(self, space, budget, seed):
        pass

    def ask(self):
        return None


def test_a_yaml_strategy_that_is_not_a_strategy_says_which_method_is_missing(capsys, tmp_path):
    (tmp_path / "s.yaml").write_text(f"search:\n  search_strategy:\n    class_path: {__name__}.NoTell\n")
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--config", str(tmp_path / "s.yaml"),
                       "--results_dir", str(tmp_path / "r"), *FAST)
    assert code == 2 and f"{__name__}.NoTell has no method tell(candidate, score) (the Strategy protocol" in err
    with pytest.raises(TypeError, match=r"NoTell has no method tell\(candidate, score\)"):
        ArchitectureSearch(search_strategy=NoTell())


@pytest.mark.parametrize("content, message", [
    (b"", " is empty: expected a YAML mapping of the recipe's sections (data:, search:"),
    (b"- a\n- b\n", " holds a YAML list, not a mapping: expected a YAML mapping"),
    (b"search: 3\x00\xff\xfe", " is not text (byte 0xff at offset 10 is not UTF-8): expected a YAML mapping"),
    (b"search:\n  budget: 3\n  seed: 1\n  budget: 4\n",
     ": the key 'budget' appears twice in one mapping (lines 2 and 4); YAML would keep the last silently"),
], ids=["empty", "list", "binary", "repeated_key"])
def test_cli_config_files_that_are_not_recipes_are_named(content, message, capsys, tmp_path):
    (tmp_path / "bad.yaml").write_bytes(content)
    code, _, err = cli(capsys, "score", "--config", QUICKSTART, "--config", str(tmp_path / "bad.yaml"),
                       "--results_dir", str(tmp_path / "r"), *FAST)
    assert code == 2 and f"lightning-epe score: error: the config file {tmp_path / 'bad.yaml'}{message}" in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command, option, owner", [("search", ["--candidate", "5"], "fit"),
                                                    ("score", ["--candidate", "5"], "fit"),
                                                    ("score", ["--refit"], "search"), ("fit", ["--refit"], "search")])
def test_cli_options_of_another_command_are_refused(command, option, owner, capsys, tmp_path):
    code, _, err = cli(capsys, command, "--config", QUICKSTART, "--results_dir", str(tmp_path), *FAST, *option)
    assert code == 2 and f"{option[0]} applies to the {owner} command only; `{command}` would ignore it" in err
    assert not any(tmp_path.iterdir())


def test_a_batch_size_larger_than_the_data_is_recorded_with_a_warning(capsys, tmp_path):
    with pytest.warns(RuntimeWarning, match=r"the scoring batch size 64 is larger than the training set of BadData "
                                            r"\(32 samples\): scoring batches have 32 samples"):
        small_search(tmp_path, batch_size=64).run(BadData())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["scoring_batch_size"] == 32
    assert json.loads((tmp_path / "config.json").read_text())["batch_size"] == 64


class MixedSizes(BadData):
    """Images of two sizes (8x8 and 9x9) in one training set."""

    def __init__(self):
        super().__init__()
        x, y = self.dataset.tensors
        self.dataset = [(x[i] if i % 2 else torch.randn(3, 9, 9), y[i]) for i in range(len(y))]


def test_images_of_different_sizes_name_the_data_module_and_the_trial(tmp_path):
    with pytest.raises(ValueError, match=r"the scoring batch of trial 0 from MixedSizes cannot be made into one "
                                         r"batch: stack expects each tensor to be equal size.*Images of different "
                                         r"sizes\? Resize or crop"):
        small_search(tmp_path).run(MixedSizes())
    assert not (tmp_path / "scores.jsonl").exists()


class SelfChanging(nn.Module):
    """A network whose forward changes itself: its weights (in place, through ``.data``, or by replacing
    ``.data``), a parameter object, a submodule, or a new submodule."""

    def __init__(self, how: str):
        super().__init__()
        self.how = how
        self.net = NB201Space().build(1601, num_classes=4, **TINY)

    def forward(self, x):
        classifier = self.net.classifier
        if self.how == "in_place":
            with torch.no_grad():
                classifier.weight.mul_(2)
        elif self.how == "data":
            classifier.weight.data.add_(1)
        elif self.how == "data_replaced":
            classifier.weight.data = classifier.weight.data * 3
        elif self.how == "parameter_replaced":
            classifier.bias = nn.Parameter(classifier.bias.detach() + 1)
        elif self.how == "submodule_replaced":
            self.net.classifier = nn.Linear(classifier.in_features, 4)
        elif self.how == "submodule_added":
            self.extra = nn.Linear(2, 2)
        return self.net(x)


@pytest.mark.parametrize("how", ["in_place", "data", "data_replaced", "parameter_replaced", "submodule_replaced",
                                 "submodule_added"])
def test_scoring_leaves_a_self_changing_model_as_found(how):
    from lightning_epe.scores import get_score

    torch.manual_seed(0)
    model = SelfChanging(how)
    x, y = BadData().dataset.tensors
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    parameters = dict(model.named_parameters())
    for name in ("epe", "naswot", "grad_norm", "zico"):
        get_score(name)(model, x, y)
        assert dict(model.named_modules()) == modules, name  # the same module objects, none added
        assert dict(model.named_parameters()) == parameters, name  # the same Parameter objects
        after = model.state_dict()
        assert after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items()), name


def test_fit_into_a_new_results_directory_records_there(tmp_path, monkeypatch):
    fit_while(monkeypatch, lambda: None)
    search = small_search(tmp_path / "new")
    search.fit(fake_trainer(), BadData(), candidate=1601)
    summary = json.loads((tmp_path / "new" / "summary.json").read_text())
    assert summary["trained"] == 1601 and summary["test_accuracy"] == 0.5
    assert not list(tmp_path.glob("new.fit-*.json")) and not (tmp_path / "new" / "lock").exists()


def test_the_search_does_not_copy_its_own_networks_and_scores_them_as_the_plain_function():
    """The search's networks are its own (rebuilt, or redrawn by NB201Builder, for every candidate): scoring
    them skips ``restored_parameters``; their scores equal the plain function's on fresh networks."""
    from lightning_epe.scores import _isolation

    class SelfChangingSpace(FaultySpace):
        def build(self, candidate, num_classes=10, **options):
            return SelfChanging("in_place")

    copies = []
    real = _isolation.restored_parameters

    def counting(modules):
        copies.append(len(modules))
        return real(modules)

    _isolation.restored_parameters = counting
    try:
        search = ArchitectureSearch(SelfChangingSpace(), budget=2, accelerator="cpu", progress=False)
        result = search.run(BadData())
        assert copies == []
        batches = search_batches(search)
        for record in result.records:
            torch.manual_seed(search.candidate_seed(record["trial"]))
            assert record["score"] == epe_score(SelfChanging("in_place"), *batches)
        assert copies  # the plain function restores the user's model
    finally:
        _isolation.restored_parameters = real


def search_batches(search):
    from lightning_epe.search.batches import ScoringBatches

    return ScoringBatches(BadData(), search.batch_size, search.batch_policy, search.seed, torch.device("cpu"),
                          num_classes=4)(0)
