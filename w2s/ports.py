"""Ports for torch.distributed's rendezvous, chosen where nothing else on the node is handed ports.

A rendezvous port is chosen by one process and listened on later, sometimes minutes later: rank 0 of a trainer or of
an OpenRLHF model group picks it, the other ranks start, the model loads, and only then does the TCPStore bind it.
Meanwhile the port must stay free. A port from ``bind(("", 0))`` lies in the kernel's ephemeral range, which every
outgoing connection draws from too (Ray's workers, vLLM's sockets and its own rendezvous): a resumed PPO run once
failed with EADDRINUSE that way. Below that range, from 20000, lie the port blocks of w2s's Slurm jobs (Ray's
workers take ports there, launch/README.md), and Ray's own defaults lie lower still.

So a port is drawn **above** the ephemeral range (Linux's default leaves 61000-65535), where neither the kernel nor
Ray nor w2s's Slurm launch hands out ports; where nothing is left above it, below it from 20000; where nothing is
left there either, the kernel chooses, as before. Each drawn port is checked by binding it and reserved for an hour
by a file in a per-user folder, so that two processes of one node never draw the same one before either binds it
(OpenRLHF's four model groups draw theirs at once).
"""

from __future__ import annotations

import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

TOP = 65535
# Above Ray's default ports (GCS 6379, client server 10001, workers 10002-19999).
LOWEST_BELOW = 20000
MIN_WINDOW = 1000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL = (32768, 60999)
IANA_EPHEMERAL = (49152, 65535)  # macOS and the BSDs
RESERVATION_S = 3600  # a drawn port is bound within minutes; a reservation older than this is stale
_ATTEMPTS = 64


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (the platform's default where the setting cannot be read)."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return LINUX_DEFAULT_EPHEMERAL if sys.platform.startswith("linux") else IANA_EPHEMERAL


def draw_window() -> tuple[int, int] | None:
    """The ports a rendezvous port is drawn from, ``(first, last)``; None where neither side of the ephemeral
    range leaves :data:`MIN_WINDOW` ports."""
    low, high = ephemeral_range()
    if TOP - high >= MIN_WINDOW:
        return high + 1, TOP
    if low - LOWEST_BELOW >= MIN_WINDOW:
        return LOWEST_BELOW, low - 1
    return None


def reservations_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"w2s-ports-{os.getuid()}"


def _reserve(port: int) -> bool:
    """Claim ``port`` for this process unless another claimed it within the last hour."""
    folder = reservations_dir()
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / str(port)
    try:
        if time.time() - path.stat().st_mtime > RESERVATION_S:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        pass
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    return True


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_choice(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rendezvous_port(host: str = "") -> int:
    """A free TCP port on this node for a later bind, drawn as the module's docstring says."""
    window = draw_window()
    if window is not None:
        rng = random.SystemRandom()  # independent of any seed a run set: two processes must not draw alike
        for _ in range(_ATTEMPTS):
            port = rng.randint(*window)
            if _bindable(host, port) and _reserve(port):
                return port
    return _kernel_choice(host)
