"""Soak: a run SIGKILLed 20 times at random moments, rerun after each kill, ends exactly like an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.controller.test_loop import SMALL, w2s
from w2s.controller.report import latest_metrics

KILLS = 20
MAX_DELAY_S = 12.0  # a kill comes 1 to 12 s into an attempt (about 8 s of it start-up)
# What a rerun legitimately changes: wall-clock numbers and the attempt that wrote a row.
TIMING = ("seconds", "time", "attempt", "tokens_per_s", "samples_per_s")


def _numbers(run: Path) -> dict[tuple, dict]:
    return {(r["round"], r["stage"]): {k: v for k, v in r.items() if not any(t in k for t in TIMING)}
            for r in latest_metrics(run)}


def _outputs(run: Path) -> dict[str, str]:
    """sha256 of every data file the stages wrote (answers, corrections, pairs, evaluation outcomes)."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.glob("round-*/**/*.jsonl"))}


def _kill_after(args: list[str], delay: float, log: Path) -> int | None:
    """Start the driver; SIGKILL it and everything it started after ``delay`` s. None if killed, else its exit."""
    with open(log, "a") as out:
        driver = subprocess.Popen([sys.executable, "-m", "w2s.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        return driver.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)  # a crash: the driver, its Ray instance and actors at once
        driver.wait(timeout=60)
        return None


@pytest.mark.slow
def test_twenty_random_sigkills_end_like_an_uninterrupted_run(tmp_path, tiny_strong):
    args = ["run", "tiny/dpo", *SMALL]
    reference = tmp_path / "reference"
    done = w2s(*args, f"run.dir={reference}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    run, log = tmp_path / "killed", tmp_path / "killed.log"
    rng = random.Random(2026)
    kills, progress = 0, []  # stages finished when each kill came
    while kills < KILLS:
        # A resumed attempt skips what is done, so later kills land in later stages.
        status = _kill_after([*args, f"run.dir={run}"], rng.uniform(1.0, MAX_DELAY_S), log)
        assert status is None, f"the run finished after {kills} kill(s) (exit {status}); lower MAX_DELAY_S"
        kills += 1
        progress.append(len(list(run.glob("**/manifest.json"))))
    assert len(set(progress)) >= 5, progress  # the kills came all along the run, not only at its start
    rerun = w2s(*args, f"run.dir={run}")
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["attempts"]  # resumed, not started afresh

    assert _numbers(run) == _numbers(reference)
    assert _outputs(run) == _outputs(reference)
