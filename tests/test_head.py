"""A stopping driver gives up on its private Ray instance only when the stop reached the instance's head too, and
decides it once."""

from __future__ import annotations

import subprocess
import sys

import pytest

from w2s import head
from w2s.stopping import STOP


@pytest.fixture
def stopping(monkeypatch):
    """A fresh decision, a private head of two stand-in processes, and STOP cleared afterwards."""
    monkeypatch.setattr(head, "ABANDONED", [])
    monkeypatch.setattr(head, "HEAD_EXIT_S", 0.3)
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
    monkeypatch.setattr(head, "PRIVATE_HEAD", {"gcs_server": procs[0].pid, "raylet": procs[1].pid})
    yield procs
    STOP.clear()
    for p in procs:
        p.kill()
        p.wait()


def test_no_stop_no_decision(stopping):
    stopping[0].kill()
    stopping[0].wait()
    assert not head.abandoned()
    assert head.ABANDONED == []  # nothing decided: a stop may still come


def test_a_stop_that_took_a_head_process_with_it_abandons_ray_and_the_decision_sticks(stopping):
    STOP.set()
    stopping[1].kill()  # the raylet exited on the signal; the GCS lingers, as seen
    stopping[1].wait()
    assert head.abandoned()
    head.PRIVATE_HEAD.clear()
    assert head.abandoned()  # decided: every later clean-up skips Ray alike


def test_a_stop_to_the_driver_alone_keeps_the_graceful_close_and_waits_for_the_head_once(stopping):
    import time

    STOP.set()
    t0 = time.monotonic()
    assert not head.abandoned()  # the head is alive after the grace: only the driver was signalled
    assert time.monotonic() - t0 >= 0.3
    stopping[0].kill()
    stopping[0].wait()
    t0 = time.monotonic()
    assert not head.abandoned()  # decided once, without waiting again
    assert time.monotonic() - t0 < 0.1


def test_a_head_process_that_exits_within_the_grace_counts_as_lost(stopping, monkeypatch):
    import threading

    monkeypatch.setattr(head, "HEAD_EXIT_S", 5.0)
    STOP.set()
    threading.Timer(0.3, stopping[0].kill).start()  # the dashboard and log monitor exit a moment after the signal
    assert head.abandoned()


def test_clean_up_skips_ray_once_abandoned(monkeypatch):
    import ray

    from w2s.placement import remove_placement_groups

    monkeypatch.setattr(head, "ABANDONED", [True])
    calls = []
    monkeypatch.setattr(ray.util, "remove_placement_group", lambda pg: calls.append(pg))
    remove_placement_groups(["pg"])
    assert calls == []
    monkeypatch.setattr(head, "ABANDONED", [False])
    remove_placement_groups(["pg"])
    assert calls == ["pg"]
