"""A private Ray instance's head processes, and whether a stop signal reached them too.

Slurm's pre-emption and ``kill -- -PGID`` signal every process of the job step or group: Ray's head processes with
the driver. The GCS then shuts down (seen to stop answering while its process lingers), and a driver that closes
its actors gracefully waits a minute for it and exits 1. :func:`abandoned` tells a stopping driver to give up on
Ray instead: it exits 143 at once, saying how to resume, and the reaper sweeps what is left.
"""

from __future__ import annotations

from w2s.stopping import STOP

# A stopping driver's decision, made once: [True] it gave up on its private Ray instance (the CLI then exits
# without Ray's teardown), [False] it closes it as usual.
ABANDONED: list[bool] = []

# The private local instance's head processes (GCS, raylet, monitor, dashboard, ...) by kind, while this driver
# holds one (RayCluster).
PRIVATE_HEAD: dict[str, int] = {}


def head_pids() -> dict[str, int]:
    try:
        import ray

        processes = ray._private.worker._global_node.all_processes
        return {kind: int(infos[0].process.pid) for kind, infos in processes.items() if infos}
    except Exception:  # Ray moved the private attribute: the head is never taken for lost
        return {}


def head_lost(wait_s: float = 0.0) -> bool:
    """Whether this driver's private Ray instance lost any of its head processes (within ``wait_s``): a stop signal
    sent to the whole process group or Slurm job step reaches Ray's processes too (the GCS then shuts down: seen to
    stop answering while its process lingers, and a driver's calls wait a minute for it and fail). A stopping driver
    then gives up on closing its actors gracefully (the reaper sweeps them). False when joined to a cluster w2s did
    not start."""
    import time

    import psutil

    deadline = time.monotonic() + wait_s
    while True:
        for pid in PRIVATE_HEAD.values():
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    return True
            except psutil.NoSuchProcess:
                return True
        if not PRIVATE_HEAD or time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


# A signal reaches the driver and Ray's head processes together; the first of those (the dashboard, the log
# monitor) exit within a fraction of a second. Waited for once, when a stopping driver first asks.
HEAD_EXIT_S = 2.0


def abandoned() -> bool:
    """Whether a stopping driver gives up on its private Ray instance: a stop was asked for and the head is lost
    (:func:`head_lost`). Every clean-up that would talk to Ray asks first (killing actors, removing placement
    groups, ``ray.shutdown``): each of those calls waits a minute on a dead GCS and then ends the process with
    exit 1. Decided once, at the first question after the stop."""
    if not ABANDONED and STOP.is_set():
        ABANDONED.append(head_lost(HEAD_EXIT_S))
    return bool(ABANDONED and ABANDONED[0])
