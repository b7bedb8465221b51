"""What a private Ray instance listens on (the README's security section and launch/README.md say the same):
the dashboard is off; GCS, raylet, agents and workers listen beyond loopback because Ray 2.55 offers no bind
address for them; w2s itself opens no listening socket."""

from __future__ import annotations

import os

import psutil
import pytest
from omegaconf import OmegaConf

from w2s.cluster import RayCluster
from w2s.config.schema import ClusterConfig

# Ray's own processes that listen beyond loopback, by what `ps` calls them (launch/README.md, "what listens where").
RAY_LISTENERS = ("gcs_server", "raylet", "dashboard/agent.py", "runtime_env/agent/main.py", "ray::", "default_worker",
                 "dashboard/dashboard.py", "autoscaler/_private/monitor.py")


def _listeners(pids: set[int]) -> list[tuple[str, int, str]]:
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            cmd = " ".join(proc.cmdline())
            conns = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        out += [(c.laddr.ip, c.laddr.port, cmd) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


@pytest.mark.slow  # a private Ray instance starts
def test_a_private_instance_listens_only_where_ray_insists():
    with RayCluster(OmegaConf.structured(ClusterConfig(num_cpus=1))):
        import ray

        @ray.remote
        def touch() -> int:
            return os.getpid()

        ray.get(touch.remote())  # a worker started, as in a run
        me = psutil.Process()
        pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
        listening = _listeners(pids)
    assert listening  # GCS, raylet and the rest were found (the check reads real sockets)
    beyond_loopback = [(ip, port, cmd) for ip, port, cmd in listening if not ip.startswith("127.")]
    # The driver's own listener is Ray's core worker (in this process); nothing else of w2s listens.
    unknown = [(ip, port, cmd[:100]) for ip, port, cmd in beyond_loopback
               if not any(w in cmd for w in RAY_LISTENERS) and not (cmd == " ".join(me.cmdline()))]
    assert unknown == []
    assert not [(ip, port) for ip, port, _ in listening if port == 8265]  # no dashboard
    assert {w for w in ("gcs_server", "raylet") if any(w in cmd for _, _, cmd in beyond_loopback)} == \
        {"gcs_server", "raylet"}  # as the README says: no bind address for them in Ray 2.55
