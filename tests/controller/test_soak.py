"""Soak: a run SIGKILLed 20 times at random moments, rerun after each kill, ends exactly like an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.controller.test_loop import SMALL, w2s
from w2s.report import latest_metrics

KILLS = 20
# What a rerun legitimately changes: wall-clock numbers, the attempt that wrote a row, and whether the trainer
# process still held the DPO reference from the round before (a killed run's new process loads it again).
RERUN_CHANGES = ("seconds", "time", "attempt", "tokens_per_s", "samples_per_s", "reference_reused")


def _numbers(run: Path) -> dict[tuple, str]:
    """The current metrics rows without their timing (paths inside the run directory made relative)."""
    return {(r["round"], r["stage"]): json.dumps({k: v for k, v in r.items() if not any(t in k for t in RERUN_CHANGES)},
                                                 sort_keys=True).replace(str(run), "RUN")
            for r in latest_metrics(run)}


def _outputs(run: Path) -> dict[str, str]:
    """sha256 of every data file the stages wrote (answers, corrections, pairs, evaluation outcomes); a round's
    answers name the policy that wrote them, a path inside the run directory, made relative."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_text().replace(str(run), "RUN").encode()).hexdigest()
            for p in sorted(run.glob("round-*/**/*.jsonl"))}


def _manifests(run: Path) -> int:
    return len(list(run.glob("**/manifest.json")))


def _kill_during(args: list[str], run: Path, target: int, delay: float, log: Path) -> int | None:
    """Start the driver; once ``target`` stages are finished, wait ``delay`` s, then SIGKILL it and everything it
    started. None if killed, else its exit status."""
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, "-m", "w2s.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while _manifests(run) < target:
            if driver.poll() is not None:
                return driver.returncode
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        try:
            return driver.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        os.killpg(driver.pid, signal.SIGKILL)  # a crash: the driver, its Ray instance and actors at once
        driver.wait(timeout=60)
        return None
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


@pytest.mark.slow
def test_twenty_random_sigkills_end_like_an_uninterrupted_run(tmp_path, finished_dpo_run):
    args = ["run", "tiny/dpo", *SMALL]
    reference = finished_dpo_run  # the same command, never interrupted

    run = tmp_path / "killed"
    rng = random.Random(2026)
    stages = _manifests(reference)
    kills, progress = 0, []  # stages finished when each kill came
    while kills < KILLS:
        # The kills walk through the run (the k-th once about k/20 of its stages are done), each a random 0-6 s
        # later: during Ray's or an actor's start, a generation, a training run, a manifest write, between stages.
        target = (kills + 1) * (stages - 1) // KILLS
        status = _kill_during([*args, f"run.dir={run}"], run, target, rng.uniform(0.0, 6.0),
                              tmp_path / f"attempt-{kills + 1:02d}.log")
        assert status is None, f"the run finished after {kills} kill(s) (exit {status})"
        kills += 1
        progress.append(_manifests(run))
    assert len(set(progress)) >= 5, progress  # the kills came all along the run, not only at its start
    rerun = w2s(*args, f"run.dir={run}")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["attempts"]  # resumed, not started afresh

    assert _numbers(run) == _numbers(reference)
    assert _outputs(run) == _outputs(reference)
