"""Peak resident memory of a process and the processes it started, from the kernel's own high-water marks.

A role actor answers with its own (:meth:`w2s.cluster.RoleActorMixin.memory`), so that a benchmark measures the
engine or trainer where it runs, vLLM's engine process included, not the driver that asked.
"""

from __future__ import annotations

import resource
import sys


def _peak_kib(pid: int) -> int:
    """The process's peak resident set (``VmHWM`` in /proc/PID/status, KiB); 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):  # gone, or not Linux
        pass
    return 0


def tree_peak_mb() -> float:
    """Sum of the peak resident memory of this process and each of its live descendants, in MiB: an upper bound
    of the tree's simultaneous peak (each process's own peak is exact). Without /proc (macOS), this process's
    ``ru_maxrss`` alone."""
    import psutil

    me = psutil.Process()
    total = sum(_peak_kib(p.pid) for p in [me, *me.children(recursive=True)])
    if total == 0:
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes there, KiB on Linux
    return total / 1024
