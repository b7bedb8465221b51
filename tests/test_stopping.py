"""SIGTERM and SIGUSR2 stop every command alike: inside a remote wait at its next check, elsewhere at once; the
command says how to resume and exits 143 (what a scheduler's pre-emption expects)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from w2s.stopping import STOP, StopRequested, stop_deferred, stop_signals


def test_a_signal_stops_at_once_outside_a_wait_and_at_the_next_check_inside_one(capsys):
    before = signal.getsignal(signal.SIGTERM)
    with stop_signals():
        with stop_deferred():
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.1)  # the handler has run: it only set the flag
            assert STOP.is_set()
        with pytest.raises(StopRequested, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before  # put back for whoever runs next in this process
    out = capsys.readouterr().out
    assert "received SIGUSR2: stopping at the next safe point" in out and "SIGTERM" not in out  # said once
    with stop_signals():
        assert not STOP.is_set()  # a new command starts unstopped


def _signalled(cmd: list[str], marker: str, log: Path) -> tuple[int, str]:
    """Start ``w2s CMD``, SIGTERM it once ``marker`` is printed, return its exit status and output."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "w2s.cli", *cmd], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 300
        while marker not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGTERM)  # the command alone, as Slurm's pre-emption does
        return proc.wait(timeout=120), log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow  # five commands start Ray and begin to start an actor each
def test_every_command_that_starts_ray_stops_on_sigterm_with_143_and_says_how_to_resume(tmp_path, tiny_weak):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"id": i, "question": f"What is {i} plus 1?", "answer": "It is 3."}) + "\n"
                            for i in range(40)))
    answers = tmp_path / "answers.jsonl"
    prompts = "recipes/data/quickstart/dev.jsonl"
    answers.write_text("".join(json.dumps({"id": json.loads(line)["id"], "answer": "x"}) + "\n"
                               for line in Path(prompts).read_text().splitlines()))
    commands = {
        "correct": (["aligner", "correct", "--aligner", tiny_weak, "--input", str(rows), "--output",
                     str(tmp_path / "c" / "out.jsonl"), "model.aligner.dtype=float32"], "corrector actor(s)"),
        "eval": (["eval", "--prompts", prompts, "--candidate", str(answers), "--baseline", str(answers), "--output",
                  str(tmp_path / "e")], "judge actor(s)"),
        "interpret": (["interpret", "lat", "interpret/quickstart", "--aligner", tiny_weak, "--output",
                       str(tmp_path / "i"), "model.aligner.dtype=float32"], "corrector actor(s)"),
        "aligner train": (["aligner", "train", "tiny/aligner", "--output", str(tmp_path / "a")], "trainer actor(s)"),
        "bench": (["bench", "generate", "--recipe", "tiny/dpo", "--model", "asset:tiny-strong", "--dtype", "float32",
                   "--output", str(tmp_path / "b")], "generator actor(s)"),
    }
    for name, (cmd, marker) in commands.items():
        code, out = _signalled(cmd, f"starting 1 {marker}", tmp_path / f"{name.replace(' ', '-')}.log")
        assert code == 143, (name, out[-3000:])
        assert "received SIGTERM" in out and "re-run the same command to resume" in out, (name, out[-3000:])
        assert "Traceback" not in out, (name, out[-3000:])


@pytest.mark.slow  # a w2s run, stopped during its first training, or as its first actor starts
@pytest.mark.parametrize("marker, delay_s", [("round 1 train", 0.0), ("starting 1 generator actor(s)", 1.0)],
                         ids=["training", "an-actor-starting"])
def test_a_sigterm_to_the_whole_process_group_stops_the_run_with_143_without_waiting_on_ray(tmp_path, marker,
                                                                                            delay_s):
    """Slurm's pre-emption (and `kill -- -PGID`) signals Ray's processes with the driver: the GCS then stops
    answering, and a graceful close would wait a minute for it and exit 1. The driver gives up on Ray instead: 143,
    how to resume, and nothing of its instance left (the reaper sweeps it). As an actor starts, the signal also
    ends the actor: its death is the stop's, not a failure (both were exit 1 after 60 s)."""
    from tests.test_reaper import _owned_by

    run, log = tmp_path / "run", tmp_path / "driver.log"
    args = ["run", "tiny/dpo", f"run.dir={run}", "loop.prompts_per_round=4", "eval.max_prompts=4"]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "w2s.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 300
        while marker not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        time.sleep(delay_s)
        t0 = time.time()
        os.killpg(proc.pid, signal.SIGTERM)  # the driver and every Ray process it started
        code = proc.wait(timeout=120)
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    out = log.read_text()
    assert code == 143 and "re-run the same command to resume" in out, out[-3000:]
    assert took < 40, (took, out[-3000:])  # (a close waiting on the stopped GCS took 60 s and exited 1)
    assert not (run / "round-01" / "train" / "manifest.json").exists()
    deadline = time.time() + 30
    while _owned_by(proc.pid) and time.time() < deadline:
        time.sleep(0.5)
    assert _owned_by(proc.pid) == []
