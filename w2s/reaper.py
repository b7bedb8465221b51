"""A private Ray instance dies with its driver, however the driver dies.

``ray.init(address="local")`` starts the GCS, the raylet, the dashboard and runtime-env agents and the workers as
descendants of the driver; when the driver is killed (SIGKILL, the OOM killer, a node losing its job), Ray's
agents are re-parented to init and keep listening for a minute or more. Before the instance starts, the driver
tags its environment with ``W2S_RAY_OWNER`` (every Ray process inherits it) and starts a small reaper process.
The reaper polls the driver, remembering its descendants as they appear; once the driver is gone, every process
that carries the tag or was the driver's descendant gets SIGTERM, then SIGKILL, until none is left. A driver that
exits by itself stops the reaper after ``ray.shutdown``, and the reaper sweeps what that left behind: tagged
processes, and remembered ones that are no longer the driver's (a shutdown cut short by Ctrl-C leaves Ray's agents
re-parented to init).

Two marks, because either alone misses some: Ray's process-title rewrite can zero the tag in an agent's
environment block (:func:`carries`), and a process the driver started just before it died was never seen as its
descendant.

Only a private instance is reaped: a joined cluster (``cluster.address``) belongs to whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

TAG = "W2S_RAY_OWNER"
POLL_S = 0.5
GRACE_S = 3.0
SWEEP_S = 30.0  # how long the reaper keeps sweeping before it gives up on a process that will not die


def start() -> subprocess.Popen:
    """Tag this process's environment (inherited by the Ray processes it starts next) and start the reaper."""
    import psutil

    me = psutil.Process()
    os.environ[TAG] = f"{me.pid}-{me.create_time():.3f}"
    # Its own session: a signal to the driver's process group (Ctrl-C) does not stop the reaper before its work.
    return subprocess.Popen([sys.executable, "-m", "w2s.reaper", str(me.pid), os.environ[TAG]],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env={k: v for k, v in os.environ.items() if k != TAG})


def stop(reaper: subprocess.Popen | None) -> None:
    """The driver is exiting (Ray shut down, or its start was interrupted): the reaper sweeps whatever of the
    instance is still alive (Ray's agents outlive a ``ray.shutdown`` cut short by Ctrl-C) and exits."""
    if reaper is not None and reaper.poll() is None:
        reaper.terminate()
        try:
            reaper.wait(timeout=SWEEP_S + 5)
        except subprocess.TimeoutExpired:
            reaper.kill()
    os.environ.pop(TAG, None)


def carries(pid: int, tag: str, *, prefix: bool = False) -> bool:
    """Whether process ``pid`` was started with ``W2S_RAY_OWNER=tag`` (with ``prefix``: a value starting with
    ``tag``), read from the raw bytes of its environment.

    Not ``psutil.Process.environ()``: it stops at the first empty entry, and Ray's process-title rewrite zeroes the
    start of its agents' (``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) environment block, so psutil finds
    nothing there while the tag is still further on."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except FileNotFoundError:  # no /proc (macOS): psutil asks the system
        import psutil

        try:
            value = psutil.Process(pid).environ().get(TAG)
        except psutil.Error:
            return False
        return value is not None and (value.startswith(tag) if prefix else value == tag)
    except OSError:  # gone meanwhile, or another user's
        return False
    entry = f"{TAG}={tag}".encode()
    return any(e.startswith(entry) if prefix else e == entry for e in raw.split(b"\0"))


def tagged(tag: str) -> list:
    """The live processes whose environment carries ``tag``."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and carries(p.pid, tag) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:  # gone meanwhile
            pass
    return found


class Lineage:
    """The driver's descendants as the reaper has seen them (pid and start time: a pid reused later is not
    theirs), and which of them have left the driver's tree since."""

    def __init__(self, driver: int):
        self.driver = driver
        self.seen: dict[int, float] = {}

    def _tree(self) -> list:
        import psutil

        try:
            return psutil.Process(self.driver).children(recursive=True)
        except psutil.Error:  # the driver is gone
            return []

    def note(self) -> None:
        import psutil

        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                if p.pid != os.getpid():
                    self.seen.setdefault(p.pid, p.create_time())

    def orphans(self) -> list:
        """Remembered descendants still alive that are no longer the driver's (all of them once it is gone), with
        their own descendants."""
        import psutil

        inside = {p.pid for p in self._tree()}
        found: dict[int, Any] = {}
        for pid, started in self.seen.items():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if pid not in inside and p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE:
                    for q in [p, *p.children(recursive=True)]:
                        found[q.pid] = q
        return [p for pid, p in found.items() if pid != os.getpid()]


def sweep(tag: str, lineage: Lineage | None = None, *, within_s: float = SWEEP_S) -> list:
    """SIGTERM to every process carrying ``tag`` (and ``lineage``'s orphans), SIGKILL to those alive ``GRACE_S``
    later, again until none is left (a dying raylet may start one meanwhile) or ``within_s`` has passed; returns
    those still alive then."""
    import psutil

    def left() -> list:
        found = {p.pid: p for p in tagged(tag)}
        found.update({p.pid: p for p in (lineage.orphans() if lineage else [])})
        return list(found.values())

    deadline = time.monotonic() + within_s
    while (procs := left()) and time.monotonic() < deadline:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=GRACE_S)
    return procs


def _driver_alive(pid: int) -> bool:
    """The reaper is the driver's child: once the driver is gone it is re-parented, whatever the clock does (a
    process's create time moves with the wall clock, e.g. when a virtual machine is restored from a snapshot)."""
    return os.getppid() == pid


class _Stopped(Exception):
    pass


def main(argv: list[str]) -> int:
    pid, tag = int(argv[0]), argv[1]
    lineage = Lineage(pid)

    def stopped(*_: object) -> None:
        raise _Stopped

    signal.signal(signal.SIGTERM, stopped)  # the driver's own stop: sweep what is left, at once
    try:
        while _driver_alive(pid):
            lineage.note()
            time.sleep(POLL_S)
    except _Stopped:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the sweep is not cut short
    return 1 if sweep(tag, lineage) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
