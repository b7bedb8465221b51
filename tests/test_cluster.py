"""The Ray starter: a private local instance, never someone else's cluster on the same host."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from omegaconf import OmegaConf

from w2s.cluster import RayCluster
from w2s.config.schema import ClusterConfig


def test_private_instance_ignores_a_cluster_already_running_here(monkeypatch):
    import ray

    short = tempfile.mkdtemp(prefix="w2s-ray-")  # Ray's socket paths must stay under ~107 characters
    port = 36000 + os.getpid() % 1000
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    other = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
                              "--include-dashboard=false", "--node-ip-address=127.0.0.1",
                              f"--temp-dir={short}"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while subprocess.run([ray_bin, "status", f"--address=127.0.0.1:{port}"], env=env,
                             capture_output=True).returncode != 0:
            assert other.poll() is None, other.stdout.read()
            assert time.time() < deadline, "the other Ray cluster did not come up"
            time.sleep(1)
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # what a bare ray.init() would attach to
        cfg = OmegaConf.structured(ClusterConfig(num_cpus=2))
        with RayCluster(cfg) as cluster:
            assert cluster.started
            ours = ray.get_runtime_context().gcs_address
            assert not ours.endswith(f":{port}")
            nodes = cluster.describe()["nodes"]
            assert len(nodes) == 1 and nodes[0]["resources"]["CPU"] == 2
        assert not ray.is_initialized()
        assert other.poll() is None  # the other cluster is untouched
    finally:
        if other.poll() is None:
            os.killpg(other.pid, signal.SIGTERM)  # only what this test started
            other.wait(timeout=60)
        shutil.rmtree(short, ignore_errors=True)


def test_role_group_places_shards_and_reports_a_dead_actor(monkeypatch):
    import pytest

    from w2s.cluster import RoleActorMixin, RoleGroup
    from w2s.errors import WorkerError

    class Fragile(RoleActorMixin):  # defined here so Ray ships it by value to the actors
        def crash(self, items):
            os._exit(3)

        def echo(self, items):
            return [x * 2 for x in items]

    cfg = OmegaConf.structured(ClusterConfig(num_cpus=2))
    role = OmegaConf.create({"num_actors": 2, "num_cpus_per_actor": 1, "num_gpus_per_actor": 0})
    with RayCluster(cfg), RoleGroup("corrector", Fragile, role, strategy="PACK", timeout_s=60) as group:
        assert group.map_shards("echo", [1, 2, 3]) == [2, 4, 6]  # contiguous shards, results in order
        assert {p["rank"] for p in group.placements()} == {0, 1}
        with pytest.raises(WorkerError) as e:
            group.map_shards("crash", [1, 2], what="round 1 correct")
        message = str(e.value)
        assert "round 1 correct" in message and "corrector rank" in message and "died" in message
        assert "pid" in message and "logs" in message
