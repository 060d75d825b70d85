"""Kill a 60-candidate search at many moments, rerun the same command each time, check nothing is lost.

The command (``lightning-epe score`` on the quickstart recipe, tiny NB201 networks) runs once
uninterrupted (the reference) and once interrupted at each of these moments, in turn, in the same
results directory:

1. SIGKILL during start-up (imports; no file written yet)
2. SIGKILL right after ``config.json`` appears (before the first record)
3. SIGKILL after 5 records
4. SIGKILL after 15 records, then a torn record is appended: the first half of the line the next
   trial writes (taken from the reference run), i.e. what a kill in the middle of writing a record
   leaves. Hitting that moment with a real signal is a matter of luck (a record is one ``write``
   of ~300 bytes), so it is simulated; the next start must cut the torn line off.
5. SIGINT (Ctrl-C) after 30 records: exit code 130 and a message on how to resume
6. SIGKILL after 45 records
7. SIGKILL after the 60th record (while the summary and leaderboard are written), if still running

then the same command once more, to the end. Checked: every trial is in ``scores.jsonl`` exactly
once, every line parses, every (candidate, score) equals the reference bit for bit, and the best
(``summary.json``) equals the reference's. (With another ``--candidates``, the record counts of
the moments scale with it.)

Then two more faults of one results directory:

8. Two writers at once: the same command started twice, together, in an empty directory. One
   must refuse (exit 1, naming the holder of the directory's lock), the other run to the end;
   then the refused one is run again (it resumes: nothing scored twice).
9. A forced run with a different score (``--search.score naswot --search.force true``) in the
   finished directory, SIGKILLed midway, then run again to the end: the epe records must be in
   ``previous/1/`` byte for byte, and ``scores.jsonl`` must hold the naswot records only.

Reported: records lost (a reference trial missing), duplicated (a trial twice) and mixed (a
record of another configuration, by its ``config_id``); all must be 0. Exit code 0 when all hold.

    python bench/kill_resume.py                         # ~16 process starts
    python bench/kill_resume.py --candidates 60 --threads 1 --work /tmp/kill-resume
    python bench/kill_resume.py --candidates 20         # a quick run

A smaller version runs in CI: tests/integration/test_reliability.py::
test_kill_and_ctrl_c_then_rerun_equals_an_uninterrupted_run.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(candidates: int, results_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lightning_epe.cli", "score", "--config", str(ROOT / "recipes" / "quickstart.yaml"),
            "--search.budget", str(candidates), "--search.build_options", '{"C": 2, "N": 1}',
            "--search.batch_size", "64", "--search.progress", "false", "--results_dir", str(results_dir), *extra]


def audit(path: Path, expected: dict[int, dict], config_ids: set[str] | None = None) -> dict:
    """Records ``lost`` (an expected trial missing), ``duplicated`` (a trial more than once), ``mixed``
    (config_id not in ``config_ids``; default: not the most common one) and ``different`` (candidate or
    score not bit for bit the expected one) in ``path``; every line must parse."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    trials = [r["trial"] for r in records]
    ids = [r.get("config_id") for r in records]
    if config_ids is None:
        config_ids = {max(set(ids), key=ids.count)} if ids else set()
    by_trial = {r["trial"]: r for r in records}
    return {
        "lost": sum(t not in by_trial for t in expected),
        "duplicated": len(trials) - len(set(trials)),
        "mixed": sum(i not in config_ids for i in ids),
        "different": sum((r["candidate"], r["score"]) != (expected[t]["candidate"], expected[t]["score"])
                         for r in records if (t := r["trial"]) in expected),
    }


def clean(counts: dict) -> bool:
    return not any(counts.values())


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run(cmd: list[str], env: dict, until=None, sig: int = signal.SIGKILL,
        timeout: float = 1800) -> tuple[int, str, bool]:
    """Run ``cmd``; send ``sig`` as soon as ``until()`` is true. (exit code, stderr tail, signal sent)."""
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    sent, deadline = False, time.monotonic() + timeout
    while until is not None and process.poll() is None and time.monotonic() < deadline:
        if until():
            process.send_signal(sig)
            sent = True
            break
        time.sleep(0.002)
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err.strip()[-300:], sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--candidates", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs")
    parser.add_argument("--work", default=None, help="working directory (default: a temporary one, removed)")
    args = parser.parse_args()
    n = args.candidates
    if n < 12:
        parser.error("--candidates must be >= 12 (the kill moments are at 1/12, 1/4, 1/2 and 3/4 of the records)")
    work = Path(args.work or tempfile.mkdtemp(prefix="kill-resume-"))
    reference, resumed = work / "reference", work / "resumed"
    for d in (reference, resumed):
        shutil.rmtree(d, ignore_errors=True)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    scores = resumed / "scores.jsonl"

    started = time.monotonic()
    code, err, _ = run(command(n, reference), env)
    if code != 0:
        print(f"reference run failed ({code}): {err}")
        return 1
    reference_lines = (reference / "scores.jsonl").read_text().splitlines()
    print(f"reference: {n} candidates, uninterrupted, {time.monotonic() - started:.0f} s")

    t0 = [0.0]
    at = [n // 12, n // 4, n // 2, 3 * n // 4]  # 5, 15, 30, 45 of 60
    moments = [
        ("start-up (no file yet)", signal.SIGKILL, lambda: time.monotonic() - t0[0] > 1.0),
        ("config.json just written", signal.SIGKILL, lambda: (resumed / "config.json").exists()),
        (f"after {at[0]} records", signal.SIGKILL, lambda: lines_in(scores) >= at[0]),
        (f"after {at[1]} records + a torn record", signal.SIGKILL, lambda: lines_in(scores) >= at[1]),
        (f"Ctrl-C after {at[2]} records", signal.SIGINT, lambda: lines_in(scores) >= at[2]),
        (f"after {at[3]} records", signal.SIGKILL, lambda: lines_in(scores) >= at[3]),
        (f"after record {n} (summary)", signal.SIGKILL, lambda: lines_in(scores) >= n),
    ]
    ok = True
    print(f"{'moment':<36} {'signal':<8} {'exit':>5} {'records before':>15} {'after':>6}")
    for name, sig, until in moments:
        before = lines_in(scores)
        t0[0] = time.monotonic()
        code, err, sent = run(command(n, resumed), env, until, sig)
        after = lines_in(scores)
        note = "" if sent else "  (finished before the signal)"
        if sig == signal.SIGINT and sent:
            if code != 130 or "rerun the same command to resume" not in err:
                ok = False
                note += f"  UNEXPECTED: exit {code}, stderr {err!r}"
        elif sent and code != -sig:
            ok = False
            note += f"  UNEXPECTED: exit {code}, stderr {err!r}"
        print(f"{name:<36} {signal.Signals(sig).name:<8} {code:>5} {before:>15} {after:>6}{note}")
        if "torn" in name:
            with open(scores, "rb+") as f:  # cut back to complete lines (as the next start would), then tear
                data = f.read()
                f.seek(data.rfind(b"\n") + 1)
                f.truncate()
                done = data[: data.rfind(b"\n") + 1].count(b"\n")
                line = reference_lines[done]
                f.write(line[: len(line) // 2].encode())
            print(f"{'  + torn half of record ' + str(done):<36} {'-':<8} {'-':>5} {done:>15} {done:>6}")

    code, err, _ = run(command(n, resumed), env)
    print(f"{'final rerun to the end':<36} {'-':<8} {code:>5} {lines_in(scores):>21}")
    ok &= code == 0
    records = [json.loads(line) for line in scores.read_text().splitlines()]  # every line must parse
    trials = sorted(r["trial"] for r in records)
    once = trials == list(range(n))
    expected = {json.loads(line)["trial"]: json.loads(line) for line in reference_lines}
    same = all((r["candidate"], r["score"]) == (expected[r["trial"]]["candidate"], expected[r["trial"]]["score"])
               for r in records)
    best = [json.loads((d / "summary.json").read_text())["best"] for d in (reference, resumed)]
    print(f"every trial exactly once: {once}; every line parses: True; scores bitwise equal to the reference: "
          f"{same}; best equal: {best[0] == best[1]} ({best[1]['arch']}, {best[1]['score']})")
    ok &= once and same and best[0] == best[1]
    expected = {json.loads(line)["trial"]: json.loads(line) for line in reference_lines}
    counts = audit(scores, expected)
    print(f"kills and resumes: lost {counts['lost']}, duplicated {counts['duplicated']}, mixed {counts['mixed']}")
    ok &= clean(counts)

    ok &= two_writers(n, work / "two", env, expected)
    ok &= forced_other_score(n, resumed, env, expected)
    print(f"{'PASS' if ok else 'FAIL'} in {time.monotonic() - started:.0f} s")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


def two_writers(n: int, directory: Path, env: dict, expected: dict) -> bool:
    """The same command twice at once in one directory: one refuses (the lock), one runs; then the
    refused one again (it resumes)."""
    shutil.rmtree(directory, ignore_errors=True)
    processes = [subprocess.Popen(command(n, directory), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(p.wait(timeout=1800), p.stderr.read()) for p in processes]
    codes = sorted(code for code, _ in outcomes)
    refusal = next((err for code, err in outcomes if code != 0), "")
    ok = codes == [0, 1] and "is in use by another search (pid" in refusal
    holder = refusal[refusal.find("(pid") + 1:refusal.find(";")] if refusal else ""
    print(f"two writers at once: exit codes {codes}; the refused one said: in use by another search ({holder})")
    code, err, _ = run(command(n, directory), env)
    counts = audit(directory / "scores.jsonl", expected)
    print(f"  the refused one again: exit {code}; lost {counts['lost']}, duplicated {counts['duplicated']}, "
          f"mixed {counts['mixed']}, not bitwise equal {counts['different']}")
    return ok and code == 0 and clean(counts)


def forced_other_score(n: int, directory: Path, env: dict, expected: dict) -> bool:
    """``--search.score naswot --search.force true`` in the finished epe directory, killed midway, then
    run again: the epe records move to previous/1/ intact, scores.jsonl holds naswot records only."""
    epe = (directory / "scores.jsonl").read_bytes()
    forced = command(n, directory, "--search.score", "naswot", "--search.force", "true")
    scores = directory / "scores.jsonl"
    code, err, sent = run(forced, env, lambda: (directory / "previous").exists() and lines_in(scores) >= n // 3)
    print(f"forced run with another score (naswot), SIGKILL after {lines_in(scores)} records: exit {code}")
    code, err, _ = run(forced, env)
    kept = (directory / "previous" / "1" / "scores.jsonl")
    same_epe = kept.exists() and kept.read_bytes() == epe
    epe_ids = {json.loads(line)["config_id"] for line in epe.decode().splitlines() if "config_id" in line}
    config = json.loads((directory / "config.json").read_text())
    records = [json.loads(line) for line in scores.read_text().splitlines()]
    ids = {r.get("config_id") for r in records}
    counts = audit(scores, {t: {"candidate": r["candidate"], "score": None} for t, r in expected.items()})
    counts.pop("different")  # naswot values, not the epe reference's
    mixed = counts["mixed"] + sum(i in epe_ids for i in ids)
    print(f"  run again: exit {code}; epe records in previous/1/ byte for byte: {same_epe}; config.json score: "
          f"{config['score']}; scores.jsonl: lost {counts['lost']}, duplicated {counts['duplicated']}, "
          f"mixed {mixed} ({len(records)} records, {len(ids)} config_id)")
    return code == 0 and same_epe and config["score"] == "naswot" and counts["lost"] == counts["duplicated"] == 0 \
        and mixed == 0 and len(ids) == 1


if __name__ == "__main__":
    sys.exit(main())
