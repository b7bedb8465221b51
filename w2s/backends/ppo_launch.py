"""Running OpenRLHF's PPO command (from :func:`w2s.backends.ppo.build_ppo_command`) as a child process group.

The wait is bounded by liveness, not by a total time: a PPO run of several hours is fine as long as the
process is alive and keeps writing to its log (OpenRLHF's and vLLM's progress bars and logs do, many times a
minute). The run is stopped when it falls silent for ``idle_timeout_s``, when an optional ``max_seconds`` has
passed, and when :data:`w2s.cluster.STOP` is set (SIGTERM or SIGUSR2 reached the driver): the child's process
group is sent SIGTERM, then SIGKILL if it lingers, and :class:`w2s.cluster.StopRequested` is raised so the run
stops at this safe point like any other stage.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path

from w2s.cluster import STOP, StopRequested, stop_deferred
from w2s.errors import W2SError


class _Output:
    """The child's output, pumped line by line into the log; remembers when it last wrote and its last lines."""

    def __init__(self, proc: subprocess.Popen, log: object):
        self.tail: deque[str] = deque(maxlen=40)
        self.last_output = time.monotonic()
        self._proc, self._log = proc, log
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:  # text mode: a progress bar's "\r" updates count as lines too
            self._log.write(line)  # type: ignore[attr-defined]
            self._log.flush()  # type: ignore[attr-defined]
            self.tail.append(line.rstrip("\n"))
            self.last_output = time.monotonic()

    def text(self) -> str:
        return "\n".join(self.tail)


def launch_ppo(cmd: list[str], env: dict[str, str] | None, log_path: str | os.PathLike, idle_timeout_s: float, *,
               max_seconds: float | None = None, poll_s: float = 1.0, stop: threading.Event = STOP) -> None:
    """Run a PPO command to completion, streaming its output to ``log_path``.

    Args:
        cmd: From :func:`w2s.backends.ppo.build_ppo_command`.
        env: Extra environment variables (merged over this process's).
        log_path: File receiving stdout and stderr.
        idle_timeout_s: Longest the child may stay silent (no new output) before it is taken for hung (the loop
            passes ``cluster.liveness_timeout_s``; ``inf``: never).
        max_seconds: Optional cap on the whole run (the loop passes ``cluster.rpc_timeout_s``; None: none,
            liveness alone bounds it).
        poll_s: How often the child, its output and the stop flag are checked.
        stop: The stop flag (default :data:`w2s.cluster.STOP`, set by the driver's SIGTERM/SIGUSR2 handler).

    Raises:
        StopRequested: ``stop`` was set; the child's process group was stopped.
        W2SError: the command failed, fell silent or ran past ``max_seconds``; the message holds the log's last
            lines and its path.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **(env or {})}
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log, stop_deferred():  # a stop signal: the loop below stops it
        log.write("$ " + shlex.join(cmd) + "\n")
        log.flush()
        try:
            # Its own session: the whole group (OpenRLHF's driver and anything it forks) is stopped together.
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=full_env, text=True,
                                    bufsize=1, start_new_session=True)
        except OSError as exc:
            raise W2SError(f"could not start PPO ({shlex.join(cmd[:4])} ...): {exc}") from exc
        out = _Output(proc, log)
        problem = ""
        while proc.poll() is None:
            now = time.monotonic()
            if stop.is_set():
                _stop(proc)
                out.thread.join(timeout=5)
                raise StopRequested("PPO")
            if now - out.last_output > idle_timeout_s:
                problem = (f"PPO wrote nothing for {now - out.last_output:.0f} s (limit {idle_timeout_s:g} s, "
                           "cluster.liveness_timeout_s) and looks hung; it was stopped")
            elif max_seconds is not None and now - start > max_seconds:
                problem = f"PPO did not finish within {max_seconds:g} s (cluster.rpc_timeout_s); it was stopped"
            if problem:
                _stop(proc)
                out.thread.join(timeout=5)
                raise W2SError(f"{problem}; log: {log_path}\n{out.text()}")
            time.sleep(poll_s)
        out.thread.join(timeout=30)
    if proc.returncode != 0 and stop.is_set():  # it failed as the stop signal stopped Ray's processes under it
        raise StopRequested("PPO")
    if proc.returncode != 0:
        raise W2SError(f"PPO failed with exit code {proc.returncode} after {time.monotonic() - start:.0f} s; "
                       f"log: {log_path}\n{out.text()}")


def _stop(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Terminate the PPO process group we started (its own session), then kill it if it lingers."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
