"""Scoring on two CPU processes (gloo, launched by Lightning) equals one process, and resumes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def score(results_dir, *extra):
    cmd = [sys.executable, "-m", "lightning_epe.cli", "score", "--config", str(ROOT / "recipes/quickstart.yaml"),
           "--results_dir", str(results_dir), "--accelerator", "cpu", "--search.budget", "5",
           "--search.batch_size", "32", "--search.build_options", '{"C": 2, "N": 1}', "--search.progress", "false",
           *extra]
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records(results_dir):
    return [(r["trial"], r["candidate"], r["score"]) for r in
            map(json.loads, (results_dir / "scores.jsonl").read_text().splitlines())]


def assert_same(a, b):
    # Lightning gives each of the two processes one CPU thread: convolution sums in another order
    # move the last bits of a score, so scores are compared to 1e-9 relative, candidates exactly.
    assert [r[:2] for r in a] == [r[:2] for r in b]
    assert [r[2] for r in a] == pytest.approx([r[2] for r in b], rel=1e-9)


def test_two_processes_equal_one_and_resume(tmp_path):
    score(tmp_path / "one")
    two = score(tmp_path / "two", "--devices", "2", "--strategy", "ddp")
    assert "Starting with 2 processes" in two.stderr + two.stdout
    assert_same(records(tmp_path / "two"), records(tmp_path / "one"))
    assert two.stdout.count("best:") == 1  # only rank 0 reports
    # kill-like truncation, then the distributed run resumes and completes the same records
    lines = (tmp_path / "two" / "scores.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "two" / "scores.jsonl").write_text("".join(lines[:2]) + lines[2][:10])
    score(tmp_path / "two", "--devices", "2", "--strategy", "ddp")
    assert_same(records(tmp_path / "two"), records(tmp_path / "one"))
