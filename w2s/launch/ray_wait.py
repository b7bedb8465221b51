"""Wait until every Ray node of a Slurm job has joined the cluster (used by launch/slurm/ray_cluster.sh).

    python -m w2s.launch.ray_wait --address HEAD_IP:PORT --timeout 300 n1=10.0.0.1 n2=10.0.0.2

Polls the GCS (no driver is started, so it takes no cluster resources) until a live Ray node reports each
expected IP: the address the job script gave that node's ``ray start --node-ip-address``. On timeout it exits 1
naming the Slurm nodes whose Ray node is missing, the addresses Ray did register, and where the logs are.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def alive_node_ips(address: str, timeout_s: float = 5.0) -> list[str]:
    """IP addresses of the live nodes the GCS at ``address`` knows (raises while the GCS is unreachable)."""
    from ray._raylet import GcsClient  # the GCS client Ray's own CLI uses; no driver, no resources
    from ray.core.generated.gcs_pb2 import GcsNodeInfo

    infos = GcsClient(address=address).get_all_node_info(timeout=timeout_s).values()
    return [i.node_manager_address for i in infos if i.state == GcsNodeInfo.GcsNodeState.ALIVE]


def missing_nodes(expected: dict[str, str], alive_ips: list[str]) -> list[str]:
    """Slurm node names whose expected IP has no live Ray node (IPs may repeat when nodes share an address)."""
    left = list(alive_ips)
    missing = []
    for name, ip in expected.items():
        if ip in left:
            left.remove(ip)
        else:
            missing.append(name)
    return missing


def wait_for_nodes(address: str, expected: dict[str, str], timeout_s: float, poll_s: float = 1.0) -> float:
    """Poll until every expected node is alive.

    Returns:
        Seconds waited.

    Raises:
        TimeoutError: naming the missing Slurm nodes and their addresses.
    """
    t0 = time.monotonic()
    last_error = ""
    alive: list[str] = []
    while True:
        try:
            alive = alive_node_ips(address)
            missing = missing_nodes(expected, alive)
            last_error = ""
        except Exception as e:  # the GCS is not up yet, or went away
            missing, last_error = list(expected), f" (GCS at {address} not answering: {str(e).splitlines()[0]})"
        if not missing:
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout_s:
            names = ", ".join(f"{n} ({expected[n]})" for n in missing)
            # A node that registered under another address than the one it was given shows up here.
            seen = f"; live Ray nodes: {', '.join(sorted(alive))}" if alive and not last_error else ""
            raise TimeoutError(f"Ray nodes missing after {timeout_s:.0f}s: {names}{seen}{last_error}")
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="HEAD_IP:PORT of the Ray GCS")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for all nodes")
    p.add_argument("--log-hint", default="", help="where the Ray node logs are, for the error message")
    p.add_argument("nodes", nargs="+", help="NAME=IP of every node that must join")
    args = p.parse_args(argv)
    expected = dict(n.split("=", 1) for n in args.nodes)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        waited = wait_for_nodes(args.address, expected, args.timeout)
    except TimeoutError as e:
        hint = f"; see {args.log_hint}" if args.log_hint else ""
        print(f"w2s: {e}{hint}", file=sys.stderr)
        return 1
    print(f"w2s: all {len(expected)} Ray nodes alive after {waited:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
