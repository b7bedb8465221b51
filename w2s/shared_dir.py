"""A multi-node run needs its run directory on a filesystem every node shares: trainer rank 0 writes each round's
policy there and the generators on other nodes load it from the same path. Checked before any stage starts: a
task pinned to each node reads a token the driver wrote and writes one back, and the driver reads them all."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path
from typing import Any

from w2s.errors import ClusterError

PROBE_TIMEOUT_S = 120.0


def _probe(folder: str, token: str, node_id: str) -> tuple[str, bool]:
    """On one node: whether the driver's token is there, and if so the node's own written back."""
    path = Path(folder)
    try:
        seen = (path / "driver").read_text() == token
        if seen:
            (path / node_id).write_text(token)
    except OSError:
        seen = False
    return socket.gethostname(), seen


def check_shared_run_dir(run_dir: Path, nodes: list[dict[str, Any]]) -> None:
    """Raise unless every node of ``nodes`` (``node_id``, ``hostname``) reads and writes ``run_dir`` as the driver
    does. One node: nothing to check.

    Raises:
        ClusterError: naming the nodes that do not share it, and the fix.
    """
    if len(nodes) < 2:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = Path(run_dir) / ".nodes"
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    (folder / "driver").write_text(token)
    probe = ray.remote(num_cpus=0)(_probe)
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["node_id"], soft=False)).remote(
        str(folder), token, n["node_id"]) for n in nodes]
    try:
        answers = ray.get(refs, timeout=PROBE_TIMEOUT_S)
    except Exception as e:  # a node that cannot run the probe cannot run a role either
        raise ClusterError(f"could not check that every node sees run.dir {run_dir}: {e}") from e
    apart = [f"{host or n.get('hostname') or n['node_id'][:8]}" for n, (host, seen) in zip(nodes, answers)
             if not seen or not (folder / n["node_id"]).is_file()
             or (folder / n["node_id"]).read_text() != token]
    if apart:
        raise ClusterError(f"run.dir {run_dir} is not shared with node(s) {', '.join(apart)}: trainer rank 0 writes "
                           "each round's policy there and generators on other nodes load it from the same path. Put "
                           "run.dir on a filesystem every node mounts at the same path (NFS, Lustre, GPFS)")
