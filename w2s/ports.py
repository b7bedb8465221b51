"""Ports for torch.distributed's rendezvous, chosen where the kernel hands out none of its own.

A rendezvous port is chosen by one process and listened on later, sometimes minutes later: rank 0 of a trainer or of
an OpenRLHF model group picks it, the other ranks start, the model loads, and only then does the TCPStore bind it. A
port from ``bind(("", 0))`` lies in the kernel's ephemeral range, which every outgoing connection draws from too:
Ray's workers, vLLM's sockets and its own rendezvous all take ports there meanwhile, and a resumed PPO run once failed
with EADDRINUSE that way. Below that range the kernel assigns nothing unless a process asks for that very port, so a
port chosen there stays free until it is used (the choice is still checked by binding it).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Ray's workers listen on 10002-19999 by default (`ray start --min-worker-port/--max-worker-port`).
LOWEST = 20000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_EPHEMERAL = (32768, 60999)
_ATTEMPTS = 64


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (Linux's default where the setting cannot be read)."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return LINUX_DEFAULT_EPHEMERAL


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
    """A free TCP port on this node, below the ephemeral range where one is left (see the module's docstring).

    Where an administrator moved the ephemeral range so low that nothing is left between Ray's worker ports and it,
    the kernel chooses, as before."""
    high = ephemeral_range()[0]
    if high - LOWEST >= 1000:
        rng = random.SystemRandom()  # independent of any seed a run set: two processes must not draw alike
        for _ in range(_ATTEMPTS):
            port = rng.randrange(LOWEST, high)
            if _bindable(host, port):
                return port
    return _kernel_choice(host)
