"""A private Ray instance dies with its driver, however the driver dies.

``ray.init(address="local")`` starts the GCS, the raylet, the dashboard and runtime-env agents and the workers as
descendants of the driver; when the driver is killed (SIGKILL, the OOM killer, a node losing its job), Ray's
agents are re-parented to init and keep listening for a minute or more. Before the instance starts, the driver
tags its environment with ``W2S_RAY_OWNER`` (every Ray process inherits it) and starts a small reaper process
that polls the driver's pid: once the driver is gone, every process carrying the tag gets SIGTERM, then SIGKILL.
A driver that exits normally stops the reaper itself, after ``ray.shutdown``.

Only a private instance is reaped: a joined cluster (``cluster.address``) belongs to whoever started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

TAG = "W2S_RAY_OWNER"
POLL_S = 0.5
GRACE_S = 3.0


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
    """The driver is exiting normally (Ray shut down): the reaper has nothing to do."""
    if reaper is not None and reaper.poll() is None:
        reaper.terminate()
        try:
            reaper.wait(timeout=5)
        except subprocess.TimeoutExpired:
            reaper.kill()
    os.environ.pop(TAG, None)


def tagged(tag: str) -> list:
    """The live processes whose environment carries ``tag``."""
    import psutil

    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and p.environ().get(TAG) == tag and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:  # gone meanwhile, or another user's
            pass
    return found


def _driver_alive(pid: int) -> bool:
    """The reaper is the driver's child: once the driver is gone it is re-parented, whatever the clock does (a
    process's create time moves with the wall clock, e.g. when a virtual machine is restored from a snapshot)."""
    return os.getppid() == pid


def main(argv: list[str]) -> int:
    import psutil

    pid, tag = int(argv[0]), argv[1]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the driver's own normal stop
    while _driver_alive(pid):
        time.sleep(POLL_S)
    procs = tagged(tag)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for p in alive + tagged(tag):  # and any that a dying raylet started meanwhile
        try:
            p.kill()
        except psutil.Error:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
