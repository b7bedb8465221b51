"""The PPO launcher: log streaming, failures, the stop flag and the liveness bound, on fake child commands."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from w2s.backends.ppo_launch import launch_ppo
from w2s.cluster import StopRequested
from w2s.errors import W2SError

# A child that reports its pid, then sleeps; on SIGTERM it says so and exits (as OpenRLHF's driver would).
SLEEPER = ("import os, signal, sys, time\n"
           "def term(*_):\n"
           "    print('got SIGTERM', flush=True); sys.exit(0)\n"
           "signal.signal(signal.SIGTERM, term)\n"
           "print('pid', os.getpid(), flush=True)\n"
           "time.sleep(120)\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pid(log) -> int:
    line = next(x for x in log.read_text().splitlines() if x.startswith("pid "))
    return int(line.split()[1])


def test_streams_the_log_and_reports_failures(tmp_path):
    log = tmp_path / "ppo.log"
    launch_ppo([sys.executable, "-c", "import os; print('hello', os.environ['W2S_X'])"], {"W2S_X": "42"}, log, 60)
    assert "hello 42" in log.read_text()
    with pytest.raises(W2SError, match=r"exit code 3[\s\S]*boom"):
        launch_ppo([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], None, log, 60)


def test_the_stop_flag_stops_the_child_group_cleanly(tmp_path):
    log = tmp_path / "stop.log"
    stop = threading.Event()
    timer = threading.Timer(1.5, stop.set)  # what SIGTERM/SIGUSR2 at the driver does to w2s.cluster.STOP
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(StopRequested, match="PPO"):
            launch_ppo([sys.executable, "-c", SLEEPER], None, log, 600, stop=stop, poll_s=0.2)
    finally:
        timer.cancel()
    assert time.monotonic() - start < 20  # not the child's 120 s, nor the 600 s idle limit
    text = log.read_text()
    assert "got SIGTERM" in text  # SIGTERM first: the child could shut down cleanly
    assert not _alive(_pid(log))


def test_a_child_that_fails_as_the_stop_arrives_ends_in_a_stop_not_a_failure(tmp_path):
    """A stop signal to the whole process group stops Ray's processes that PPO runs on: PPO then fails (its own
    session keeps the signal from it) between two checks of the flag; that failure is the stop's."""
    stop = threading.Event()
    child = "import time, sys; time.sleep(0.5); print('lost Ray', flush=True); sys.exit(1)"
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(StopRequested, match="PPO"):
        launch_ppo([sys.executable, "-c", child], None, tmp_path / "ppo.log", 600, stop=stop, poll_s=2.0)


@pytest.mark.slow  # a child process watched for seconds
def test_liveness_not_total_time_bounds_the_wait(tmp_path):
    # Runs 3 s, longer than the 1 s idle limit, but writes every 0.2 s: it is alive, so it finishes.
    chatty = "import time\nfor i in range(15):\n    print('step', i, flush=True); time.sleep(0.2)\n"
    launch_ppo([sys.executable, "-c", chatty], None, tmp_path / "chatty.log", 1.0, poll_s=0.2)
    assert "step 14" in (tmp_path / "chatty.log").read_text()
    # Silent for longer than the idle limit: taken for hung and stopped.
    log = tmp_path / "silent.log"
    with pytest.raises(W2SError, match=r"PPO wrote nothing for \d+ s \(limit 1 s"):
        launch_ppo([sys.executable, "-c", SLEEPER], None, log, 1.0, poll_s=0.2)
    assert not _alive(_pid(log))
    # An explicit cap on the whole run still works.
    with pytest.raises(W2SError, match="did not finish within 1 s"):
        launch_ppo([sys.executable, "-c", chatty], None, tmp_path / "capped.log", 60, max_seconds=1, poll_s=0.2)
