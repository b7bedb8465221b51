"""Ports and addresses for the Ray nodes of one Slurm job (used by launch/slurm/ray_cluster.sh).

    python -m w2s.launch.ray_net used-ports 20000 32767     # on a node: TCP ports in use in that range
    python -m w2s.launch.ray_net node-ip 127.0.0.1          # on a node: the address Ray registers for it
    python -m w2s.launch.ray_net plan --job-id 42 --used "20001 20417" n1=10.0.0.1 n2=10.0.0.2

Every port a Ray node opens is chosen here, inside one block of ``block`` consecutive ports per job, so that
two jobs sharing a node never collide (Ray's own defaults are fixed: client server 10001, dashboard agent
52365, one worker range 10002-19999 for everybody). A job's block is slot ``job id mod slots`` of the
window or, when one of its ports is in use on a node of the job, the first free one of the slots about half
a window further on. Layout of a block::

    +0 GCS   +1 Ray client server   +2 dashboard
    +3 + 6k .. +8 + 6k: node manager, object manager, dashboard agent http, dashboard agent grpc,
                         runtime env agent, metrics export of the k-th Ray node on one address
    the rest: worker ports, split evenly between the Ray nodes that share an address

(Several Ray nodes of one job share an address only where several Slurm nodes run on one host.)
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import dataclass

from w2s.errors import ClusterError

DEFAULT_WINDOW = (20000, 32767)  # above Ray's default worker range, below Linux's ephemeral ports (32768-)
DEFAULT_BLOCK = 512
HEAD_PORTS = 3
NODE_PORT_NAMES = ("node_manager", "object_manager", "dashboard_agent_http", "dashboard_agent_grpc",
                   "runtime_env_agent", "metrics_export")
MIN_WORKER_PORTS = 32  # per Ray node; Ray needs one per worker process


class PortPlanError(ClusterError):
    """No block of the window is free, or an explicit block is busy or too small."""


@dataclass(frozen=True)
class NodePorts:
    """The ports one Ray node opens (besides the head-only ones)."""

    name: str
    ip: str
    node_manager: int
    object_manager: int
    dashboard_agent_http: int
    dashboard_agent_grpc: int
    runtime_env_agent: int
    metrics_export: int
    min_worker: int
    max_worker: int

    def ports(self) -> set[int]:
        return {getattr(self, n) for n in NODE_PORT_NAMES} | set(range(self.min_worker, self.max_worker + 1))


@dataclass(frozen=True)
class PortPlan:
    """Every port of one job's Ray cluster."""

    job_id: int
    start: int
    end: int  # inclusive
    gcs: int
    client_server: int
    dashboard: int
    nodes: tuple[NodePorts, ...]

    def ports(self) -> set[int]:
        out = {self.gcs, self.client_server, self.dashboard}
        for n in self.nodes:
            out |= n.ports()
        return out

    def to_shell(self) -> str:
        """Shell assignments (sourced by ray_cluster.sh, kept in the job's log directory)."""
        lines = [f"# Ray ports of Slurm job {self.job_id}: block {self.start}-{self.end}",
                 f"W2S_RAY_PORT={self.gcs}", f"W2S_RAY_CLIENT_SERVER_PORT={self.client_server}",
                 f"W2S_RAY_DASHBOARD_PORT={self.dashboard}",
                 "# per node: " + " ".join(NODE_PORT_NAMES) + " min_worker max_worker"]
        for i, n in enumerate(self.nodes):
            values = " ".join(str(getattr(n, f)) for f in (*NODE_PORT_NAMES, "min_worker", "max_worker"))
            lines.append(f"W2S_RAY_NODE_PORTS_{i}={shlex.quote(values)}  # {n.name} {n.ip}")
        return "\n".join(lines) + "\n"


def block_layout(start: int, size: int, nodes: list[tuple[str, str]],
                 worker_range: tuple[int, int] | None = None, job_id: int = 0) -> PortPlan:
    """The plan for a block starting at ``start``; ``nodes`` are (name, ip) in job order.

    Raises:
        PortPlanError: the block (or ``worker_range``) leaves too few worker ports per node.
    """
    per_ip: dict[str, int] = {}
    local_index = []
    for _name, ip in nodes:
        local_index.append(per_ip.get(ip, 0))
        per_ip[ip] = per_ip.get(ip, 0) + 1
    shared = max(per_ip.values(), default=1)
    first_worker = start + HEAD_PORTS + len(NODE_PORT_NAMES) * shared
    w_lo, w_hi = worker_range or (first_worker, start + size - 1)
    per_node = (w_hi - w_lo + 1) // shared
    if per_node < MIN_WORKER_PORTS:
        raise PortPlanError(f"worker ports {w_lo}-{w_hi} leave {per_node} per Ray node "
                            f"({shared} Ray node(s) per address); need at least {MIN_WORKER_PORTS}")
    out = []
    for (name, ip), k in zip(nodes, local_index):
        base = start + HEAD_PORTS + len(NODE_PORT_NAMES) * k
        named = dict(zip(NODE_PORT_NAMES, range(base, base + len(NODE_PORT_NAMES))))
        out.append(NodePorts(name=name, ip=ip, **named, min_worker=w_lo + k * per_node,
                             max_worker=w_lo + (k + 1) * per_node - 1))
    return PortPlan(job_id=job_id, start=start, end=start + size - 1, gcs=start, client_server=start + 1,
                    dashboard=start + 2, nodes=tuple(out))


def choose_ports(job_id: int, nodes: list[tuple[str, str]], used: set[int] = frozenset(),
                 window: tuple[int, int] = DEFAULT_WINDOW, block: int = DEFAULT_BLOCK, start: int | None = None,
                 worker_range: tuple[int, int] | None = None) -> PortPlan:
    """The job's block: slot ``job_id mod slots`` of ``window``, or the next one with no port in ``used``.

    Args:
        used: ports in use on any node of the job.
        start: an explicit first port (W2S_RAY_PORT): only that block is tried.
        worker_range: explicit worker ports (W2S_RAY_MIN/MAX_WORKER_PORT) instead of the block's.

    Raises:
        PortPlanError: the explicit block is busy, or every block of the window is.
    """
    if start is not None:
        plan = block_layout(start, block, nodes, worker_range, job_id)
        busy = sorted(plan.ports() & used)
        if busy:
            raise PortPlanError(f"ports {_spans(busy)} of the block at W2S_RAY_PORT={start} are in use on a node "
                                "of this job: choose another W2S_RAY_PORT, or unset it to let w2s choose")
        return plan
    lo, hi = window
    slots = (hi - lo + 1) // block
    if slots < 1:
        raise PortPlanError(f"the port window {lo}-{hi} is smaller than one block of {block} ports")
    # Past a busy slot, jump about half the window (a stride coprime with the slot count, so every slot is
    # tried once): the next job ids, likely starting at the same time and not yet visible as used, own the
    # neighbouring slots.
    stride = next(s for s in range(slots // 2 + 1, slots + 1) if math.gcd(s, slots) == 1)
    for i in range(slots):
        slot = (job_id + i * stride) % slots
        plan = block_layout(lo + slot * block, block, nodes, worker_range, job_id)
        if not plan.ports() & used:
            return plan
    raise PortPlanError(f"every block of {block} ports in {lo}-{hi} has a port in use on a node of this job: "
                        "widen W2S_RAY_PORT_RANGE or set W2S_RAY_PORT")


def _spans(ports: list[int]) -> str:
    spans, first = [], None
    for i, p in enumerate(ports):
        first = p if first is None else first
        if i + 1 == len(ports) or ports[i + 1] != p + 1:
            spans.append(str(first) if first == p else f"{first}-{p}")
            first = None
    return ", ".join(spans[:8]) + (" ..." if len(spans) > 8 else "")


# TIME_WAIT and CLOSE sockets do not stop Ray's servers from binding (they set SO_REUSEADDR); a job's own
# previous attempt leaves many of them behind.
_STALE_STATES = {"06", "07"}


def used_ports(lo: int, hi: int) -> set[int]:
    """Local TCP ports in [lo, hi] held by a live socket (listening or connected) of this network namespace."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:  # no IPv6, or not Linux
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and ":" in fields[1] and fields[3] not in _STALE_STATES:
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if lo <= port <= hi:
                    out.add(port)
    return out


def ray_node_ip(addr: str) -> str:
    """The address Ray registers for this node when given ``addr``: Ray replaces a loopback address by the
    host's outward-facing one (``ray start --node-ip-address=127.0.0.1`` registers e.g. 192.0.2.2), so the
    job script must expect that one."""
    if not (addr.startswith("127.") or addr in ("::1", "localhost")):
        return addr
    import ray.util

    return ray.util.get_node_ip_address()


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    return int(lo), int(hi)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("used-ports", help="TCP ports in use on this node in LO..HI")
    u.add_argument("lo", type=int)
    u.add_argument("hi", type=int)
    n = sub.add_parser("node-ip", help="the address Ray registers for this node when given ADDR")
    n.add_argument("addr")
    pl = sub.add_parser("plan", help="choose the job's ports; prints shell assignments")
    pl.add_argument("--job-id", type=int, required=True)
    pl.add_argument("--window", type=_range, default=DEFAULT_WINDOW, help="LO-HI (W2S_RAY_PORT_RANGE)")
    pl.add_argument("--block", type=int, default=DEFAULT_BLOCK, help="ports per job (W2S_RAY_PORT_BLOCK)")
    pl.add_argument("--start", type=int, default=None, help="explicit first port (W2S_RAY_PORT)")
    pl.add_argument("--workers", type=_range, default=None, help="explicit worker ports LO-HI")
    pl.add_argument("--used", default="", help="ports in use on the job's nodes (space separated)")
    pl.add_argument("nodes", nargs="+", help="NAME=IP of every node, head first")
    args = p.parse_args(argv)
    if args.cmd == "used-ports":
        print(" ".join(str(x) for x in sorted(used_ports(args.lo, args.hi))))
        return 0
    if args.cmd == "node-ip":
        print(ray_node_ip(args.addr))
        return 0
    nodes = [tuple(x.split("=", 1)) for x in args.nodes]
    try:
        plan = choose_ports(args.job_id, nodes, {int(x) for x in args.used.split()}, args.window, args.block,
                            args.start, args.workers)
    except PortPlanError as e:
        print(f"w2s: {e}", file=sys.stderr)
        return 1
    print(plan.to_shell(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
