"""Run by the Slurm tests as a job's command (``sbatch RUN_DIR/slurm/w2s.sbatch python slurm_ray_probe.py OUT
[PEER]``): joins the job's Ray cluster like ``w2s run`` does and writes what it sees to OUT as JSON.

With PEER, it then waits (up to 120 s) until PEER exists, so that two jobs prove they ran at the same time.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from pathlib import Path


def listeners() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket of this network namespace."""
    out = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_ip, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc stores the address as 32-bit words in host (little-endian) order.
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            ip = ipaddress.ip_address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
                ip = ip.ipv4_mapped
            out.append((str(ip), int(hex_port, 16)))
    return out


def main() -> int:
    out, peer = Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None
    import ray

    ray.init(address=os.environ["W2S_RAY_ADDRESS"], log_to_driver=False, configure_logging=False)

    @ray.remote(num_cpus=1)
    def where() -> str:
        return ray.util.get_node_ip_address()

    info = {"address": os.environ["W2S_RAY_ADDRESS"], "task_ip": ray.get(where.remote(), timeout=120),
            "nodes": [{"ip": n["NodeManagerAddress"], "alive": n["Alive"], "cpus": n["Resources"].get("CPU", 0)}
                      for n in ray.nodes()],
            "listen": listeners()}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(info))
    tmp.rename(out)
    if peer is not None:
        deadline = time.monotonic() + 120
        while not peer.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        info["saw_peer"] = peer.exists()
        out.write_text(json.dumps(info))
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
