"""A private Ray instance's head processes, and whether a stop signal reached them too.

Slurm's pre-emption and ``kill -- -PGID`` signal every process of the job step or group: Ray's head processes with
the driver. The GCS then shuts down (seen to stop answering while its process lingers), and a driver that closes
its actors gracefully waits a minute for it and exits 1. :func:`head_lost` tells a stopping driver to give up on
Ray instead: it exits 143 at once, saying how to resume, and the reaper sweeps what is left.
"""

from __future__ import annotations

# Set when a stopping driver gave up on its private instance (head_lost): the CLI then exits at once.
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


def head_lost() -> bool:
    """Whether this driver's private Ray instance lost any of its head processes: a stop signal sent to the whole
    process group or Slurm job step reaches Ray's processes too (the GCS then shuts down: seen to stop answering
    while its process lingers, and a driver's calls wait a minute for it and fail). A stopping driver then gives up
    on closing its actors gracefully (the reaper sweeps them). False when joined to a cluster w2s did not start."""
    import psutil

    for pid in PRIVATE_HEAD.values():
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
    return False
