"""How a command stops on SIGTERM or SIGUSR2 (Slurm's pre-emption warning; SIGTERM when a job is cancelled or
pre-empted): the signal sets :data:`STOP`; where the driver waits on its actors it stops at the next check, elsewhere
at once, and :class:`StopRequested` reaches the CLI, which says how to resume and exits 143."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

EXIT_STOPPED = 143  # 128 + SIGTERM: what a scheduler expects of a job that stopped on its signal


class StopRequested(Exception):
    """SIGTERM or SIGUSR2 arrived: the driver stops at the next safe point."""


STOP = threading.Event()
# Above 0 while the driver is in a wait that checks STOP every second (or Ray is starting or stopping): a stop
# signal then only sets the flag, and the wait ends at its next check.
_DEFERRING = [0]


@contextlib.contextmanager
def stop_deferred() -> Iterator[None]:
    """A stretch in which a stop signal sets :data:`STOP` and the code inside stops at its own next check."""
    _DEFERRING[0] += 1
    try:
        yield
    finally:
        _DEFERRING[0] -= 1


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGUSR2 (Slurm's pre-emption warning) stop the command that holds this, every command that may
    start Ray alike (``w2s run``, ``aligner train``/``correct``, ``eval``, ``interpret``, ``bench``): inside a
    deferred stretch (:func:`stop_deferred`: remote waits, Ray's start and stop) at the next check of
    :data:`STOP`, elsewhere at once, as Ctrl-C does (every write is atomic or resumed row by row). Either way
    :class:`StopRequested` reaches the command's caller, which says how to resume and exits 143. The handlers
    in place before are put back on exit (a command run in-process by a test)."""
    import signal

    from w2s.console import say

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        first = not STOP.is_set()
        STOP.set()
        if _DEFERRING[0]:
            if first:
                say(f"received {name}: stopping at the next safe point")
            return
        if first:
            say(f"received {name}: stopping")
        raise StopRequested(f"the driver's own work ({name})")

    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return
    STOP.clear()
    before = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        yield
    finally:
        for sig, previous in before.items():
            signal.signal(sig, previous)


def reclaim_stop_signals() -> None:
    """Install this process's Python handlers for the stop signals again, below Python too: Ray's core worker
    installs a C++ failure handler for SIGTERM when it starts in the driver, which prints a stack dump and aborts
    (exit -6) before Python's handler can run."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        handler = signal.getsignal(sig)
        if callable(handler):
            signal.signal(sig, handler)
