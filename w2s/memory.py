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


class MachineMemory:
    """Memory in use on the whole machine (psutil's ``used``, GiB), sampled every ``every_s`` in a thread while the
    block runs: ``before`` (at its start) and ``peak``. What a run needs of a machine, its Ray and engines included."""

    def __init__(self, every_s: float = 1.0):
        import threading

        self.every_s, self.before, self.peak = every_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="w2s-memory", daemon=True)

    @staticmethod
    def used_gib() -> float:
        import psutil

        return psutil.virtual_memory().used / 2**30

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.used_gib())

    def __enter__(self) -> MachineMemory:
        self.before = self.peak = self.used_gib()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.used_gib())
