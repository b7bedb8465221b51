"""The Ray starter: a private local instance, never someone else's cluster on the same host."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import ray
from omegaconf import OmegaConf

from w2s.cluster import STOP, RayCluster, RoleGroup, StopRequested, wait_all
from w2s.config.schema import ClusterConfig
from w2s.errors import ActorRaised, ClusterError, WorkerError
from w2s.placement import remove_placement_groups


@pytest.mark.slow  # two Ray instances
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
        # `ray start` says so once its head node is up (polling `ray status` would start a Python process a second).
        said, deadline, fd = "", time.time() + 90, other.stdout.fileno()
        while "Ray runtime started" not in said and other.poll() is None and time.time() < deadline:
            if select.select([fd], [], [], 1.0)[0]:
                said += os.read(fd, 65536).decode(errors="replace")
        assert other.poll() is None and "Ray runtime started" in said, said[-3000:]
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


def _probe_class() -> type:
    import dataclasses

    from w2s.cluster import RoleActorMixin
    from w2s.workers.dispatch import Dispatch, register

    @dataclasses.dataclass(frozen=True)
    class Items:  # a row request: its rows are the field ``rows`` names
        items: list

    Items.rows = "items"

    class Probe(RoleActorMixin):  # defined in a function so Ray ships it by value to the actors
        Request = Items

        @register(Dispatch.ROWS)
        def crash(self, request):
            os._exit(3)

        @register(Dispatch.ROWS)
        def echo(self, request):
            return [x * 2 for x in request.items]

        @register(Dispatch.ROWS)
        def fail(self, request):
            return {}["no such key"]

        @register(Dispatch.ALL)
        def env(self):
            import ray

            keys = ("VLLM_RAY_BUNDLE_INDICES", "VLLM_RAY_PER_WORKER_GPUS", "TOKENIZERS_PARALLELISM")
            return {k: os.environ.get(k) for k in keys}, [int(g) for g in ray.get_gpu_ids()]

        def worker_gpus(self):
            """What vLLM's ray executor does: one 1-GPU worker per listed bundle of the captured group."""
            import ray
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            @ray.remote(num_cpus=0, num_gpus=float(os.environ["VLLM_RAY_PER_WORKER_GPUS"]))
            def worker():
                return [int(g) for g in ray.get_gpu_ids()], ray.get_runtime_context().get_node_id()

            pg = ray.util.get_current_placement_group()
            out = []
            for b in os.environ["VLLM_RAY_BUNDLE_INDICES"].split(","):  # one at a time: one worker process
                strategy = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=int(b))
                out.append(ray.get(worker.options(scheduling_strategy=strategy).remote()))
            return out

        @register(Dispatch.ALL)
        def nap(self, seconds):
            time.sleep(seconds)
            return seconds

    return Probe


Probe = _probe_class()


def _role(n, cpus, gpus):
    return OmegaConf.create({"num_actors": n, "num_cpus_per_actor": cpus, "num_gpus_per_actor": gpus})


def test_a_failed_start_after_a_stop_signal_is_a_stop_not_a_cluster_error(monkeypatch):
    """A signal to the whole process group while Ray starts stops Ray's own starting processes too: ray.init then
    fails ("the current node timed out during startup", seen), which is the stop's doing (143, how to resume),
    not a cluster to fix."""

    signalled = [True]

    def failed_start(**_kwargs):
        if signalled[0]:
            STOP.set()
        raise RuntimeError("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", failed_start)
    monkeypatch.setattr("w2s.reaper.start", lambda: None)
    try:
        with pytest.raises(StopRequested, match="start-up"):
            RayCluster(OmegaConf.structured(ClusterConfig(num_cpus=1))).__enter__()
    finally:
        STOP.clear()
    signalled[0] = False
    with pytest.raises(ClusterError, match="timed out during startup"):  # without a stop: the error and its fix
        RayCluster(OmegaConf.structured(ClusterConfig(num_cpus=1))).__enter__()


def test_the_last_frame_of_an_actors_traceback_names_file_line_function_and_code():
    from w2s.cluster import last_frame

    text = ('ray::Worker.correct() (pid=7, ip=10.0.0.1)\n  File "/x/ray/_private/worker.py", line 90, in wrapper\n'
            '    return f(*a)\n  File "/w2s/workers/corrector.py", line 51, in correct\n'
            '    return self.corrector.correct(qs, answers, seed=seed)\nKeyError: \'x\'')
    assert last_frame(text) == ("/w2s/workers/corrector.py:51 in correct: "
                                "return self.corrector.correct(qs, answers, seed=seed)")
    assert last_frame("no traceback here") == "an unknown place"


@pytest.mark.slow
class TestRoleGroups:
    """Role groups on one private Ray instance with 8 logical GPUs (none physical), shared by this class."""

    @pytest.fixture(scope="class")
    def ray8(self):
        with RayCluster(OmegaConf.structured(ClusterConfig(num_cpus=2, num_gpus=8))) as cluster:
            yield cluster

    def test_role_group_places_shards_and_reports_a_dead_actor(self, ray8):
        with RoleGroup("corrector", Probe, _role(2, 0.25, 0), strategy="PACK", timeout_s=60) as group:
            assert group.call(Probe.echo, Probe.Request([1, 2, 3])) == [2, 4, 6]  # contiguous shards, in order
            assert {p["rank"] for p in group.placements()} == {0, 1}
            # A bug inside a live actor is no death: not a WorkerError (no retry would help), with where it raised.
            with pytest.raises(ActorRaised) as raised:
                group.call(Probe.fail, Probe.Request([1, 2]), what="round 1 correct")
            assert not isinstance(raised.value, WorkerError)
            assert "it raised KeyError('no such key')" in str(raised.value)
            assert "test_cluster.py" in str(raised.value) and 'in fail: return {}["no such key"]' in str(raised.value)
            with pytest.raises(WorkerError) as e:
                group.call(Probe.crash, Probe.Request([1, 2]), what="round 1 correct")
            message = str(e.value)
            assert "round 1 correct" in message and "corrector rank" in message and "died" in message
            assert "pid" in message and "logs" in message

    def test_tensor_parallel_actors_get_one_gpu_bundles_and_vllm_env(self, ray8):
        with RoleGroup("generator", Probe, _role(2, 0.25, 2), strategy="PACK", timeout_s=60) as group:
            (env0, gpus0), (env1, gpus1) = group.call(Probe.env)
            for env in (env0, env1):
                assert env == {"VLLM_RAY_BUNDLE_INDICES": "0,1", "VLLM_RAY_PER_WORKER_GPUS": "1",
                               "TOKENIZERS_PARALLELISM": "false"}  # merged with the driver's job env
            assert gpus0 == gpus1 == []  # the engine actor holds no GPU: its workers do
            assert [len(pg.bundle_specs) for pg in group.pgs] == [2, 2]
            assert group.pgs[0].bundle_specs == [{"CPU": 0.25, "GPU": 1.0}, {"GPU": 1.0}]
            workers = group.actors[0].actor.worker_gpus.remote()
            ((w0, node0), (w1, node1)) = wait_all([workers], group.actors[:1], what="workers", timeout_s=60)[0]
            assert len(w0) == len(w1) == 1 and w0 != w1  # two distinct GPUs of the engine's own bundles
            assert node0 == node1 == group.actors[0].where["node_id"]

    def test_single_and_shared_gpu_actors_keep_one_bundle_each(self, ray8):
        with RoleGroup("trainer", Probe, _role(1, 0.25, 1), strategy="PACK", timeout_s=60) as whole, \
                RoleGroup("judge", Probe, _role(2, 0.25, 0.5), strategy="PACK", timeout_s=60) as shared:
            ((env, gpus),) = whole.call(Probe.env)
            assert env["VLLM_RAY_BUNDLE_INDICES"] is None and len(gpus) == 1
            assert [len(pg.bundle_specs) for pg in whole.pgs] == [1]
            assert shared.pgs[0].bundle_specs == [{"CPU": 0.25, "GPU": 0.5}] * 2
            assert [len(g) for _, g in shared.call(Probe.env)] == [1, 1]

    def test_colocated_roles_share_each_gpu_rank_by_rank_and_never_within_a_role(self, ray8):
        """cluster.colocate: one group of whole-GPU bundles; rank i of every role on GPU i (Ray's assignment, read
        in the actors), a tensor-parallel engine on two consecutive GPUs, a second group of a narrower role beside
        the first; the pool outlives the groups."""
        from w2s.placement import gpu_pool, place_pool, pool_nodes

        cfg = OmegaConf.create({"placement_strategy": "PACK", "colocate": ["generator", "trainer", "judge"],
                                "generator": _role(2, 0.1, 2), "trainer": _role(4, 0.1, 1),
                                "judge": _role(1, 0.1, 1)})
        pool = gpu_pool(cfg)
        assert pool.share == pytest.approx(1 / 3)
        # Four alike GPUs, each a seat (CPUs) for every role: Ray places a group's bundles largest first.
        assert [b["CPU"] for b in pool.bundles] == pytest.approx([0.3] * 4)
        pg = place_pool(pool)
        assert len(set(pool_nodes(pg))) == 1
        try:
            seated = {}
            with RoleGroup("trainer", Probe, cfg.trainer, strategy="PACK", timeout_s=60,
                           pool=(pool, pg)) as trainer, \
                    RoleGroup("generator", Probe, cfg.generator, strategy="PACK", timeout_s=60,
                              pool=(pool, pg)) as generator, \
                    RoleGroup("judge", Probe, cfg.judge, strategy="PACK", timeout_s=60, pool=(pool, pg),
                              offset=0) as judge0, \
                    RoleGroup("judge", Probe, cfg.judge, strategy="PACK", timeout_s=60, pool=(pool, pg),
                              offset=1) as judge1:
                for name, group in (("trainer", trainer), ("judge0", judge0), ("judge1", judge1)):
                    seated[name] = [g for _, g in group.call(Probe.env)]
                assert all(len(g) == 1 for g in seated["trainer"])
                trainer_gpus = [g[0] for g in seated["trainer"]]
                assert len(set(trainer_gpus)) == 4  # no two ranks of one role on one GPU
                assert seated["judge0"] == [[trainer_gpus[0]]] and seated["judge1"] == [[trainer_gpus[1]]]
                assert [p["pool_bundles"] for p in generator.placements()] == [[0, 1], [2, 3]]
                for rank, engine in enumerate(generator.actors):
                    (env, gpus) = wait_all([engine.actor.env.remote()], [engine], what="env", timeout_s=60)[0]
                    assert gpus == [] and env["VLLM_RAY_BUNDLE_INDICES"] == f"{2 * rank},{2 * rank + 1}"
                    assert float(env["VLLM_RAY_PER_WORKER_GPUS"]) == pytest.approx(1 / 3, abs=1e-3)
                    workers = wait_all([engine.actor.worker_gpus.remote()], [engine], what="workers", timeout_s=60)[0]
                    # The engine's workers sit on the GPUs of trainer ranks 2i and 2i+1.
                    assert [w[0] for w, _ in workers] == trainer_gpus[2 * rank:2 * rank + 2]
            assert ray.util.placement_group_table(pg)["state"] == "CREATED"  # the groups never remove the pool
        finally:
            remove_placement_groups([pg])

    def test_placement_errors_name_the_fix(self, ray8):
        # Three 3-GPU engines need 9 of the 8 GPUs: refused at once; the strategy is not the problem.
        with pytest.raises(ClusterError) as e:
            RoleGroup("generator", Probe, _role(3, 0.25, 3), strategy="PACK", timeout_s=60)
        text = str(e.value)
        assert "3 actor(s) x 3 one-GPU bundles on one node (tensor parallel) need 9 GPUs" in text
        assert "lower cluster.generator.num_actors to 2" in text and "placement_strategy" not in text
        # Two actors on nodes of their own, on a one-node cluster: the strategy is the problem.
        with pytest.raises(ClusterError) as e:
            RoleGroup("judge", Probe, _role(2, 0.25, 0), strategy="STRICT_SPREAD", timeout_s=2)
        assert "use cluster.placement_strategy=PACK or SPREAD" in str(e.value)
        assert ray.available_resources().get("GPU") == 8  # nothing left behind

    def test_a_call_longer_than_the_liveness_timeout_succeeds_and_a_frozen_actor_fails(self, ray8):
        # The 30 s cap only ends the test should liveness fail to catch the frozen actor.
        with RoleGroup("trainer", Probe, _role(1, 0.25, 0), strategy="PACK", timeout_s=30,
                       liveness_s=2) as group:
            t0 = time.monotonic()
            assert group.call(Probe.nap, 5, what="trainer train_sft") == [5]  # pings answered meanwhile
            assert time.monotonic() - t0 >= 5
            pid = group.actors[0].where["pid"]
            os.kill(pid, signal.SIGSTOP)  # frozen: alive to Ray, answers nothing
            try:
                t0 = time.monotonic()
                with pytest.raises(WorkerError) as e:
                    group.call(Probe.nap, 0, what="trainer train_sft")
                assert 2 <= time.monotonic() - t0 < 10
            finally:
                os.kill(pid, signal.SIGCONT)
        message = str(e.value)
        assert f"trainer train_sft: trainer rank 0 on {socket.gethostname()}" in message
        assert f"pid {pid}" in message and "liveness ping" in message and "cluster.liveness_timeout_s=2" in message
        assert f"worker-*-{pid}." in message

    def test_a_stop_request_interrupts_a_long_call(self, ray8):
        with RoleGroup("trainer", Probe, _role(1, 0.25, 0), strategy="PACK", timeout_s=0) as group:
            timer = threading.Timer(1.0, STOP.set)
            timer.start()
            t0 = time.monotonic()
            try:
                with pytest.raises(StopRequested):
                    group.call(Probe.nap, 60, what="trainer train_dpo")
                assert time.monotonic() - t0 < 5
            finally:
                timer.cancel()
                STOP.clear()

    def test_an_actor_that_dies_while_a_stop_is_asked_for_ends_the_call_as_a_stop(self, ray8, monkeypatch):
        """A signal to the whole process group (Slurm's pre-emption) stops the actors with the driver: their death
        is the stop's doing, not a failure to report (exit 1) or retry."""
        import w2s.cluster as cluster

        real_get = cluster._get

        def signalled_then_get(ref, actor, what):
            if what == "round 1 correct":  # (the call was sent before the stop: the wait's own check passed)
                STOP.set()  # the signal that ended the actor reached the driver too
            return real_get(ref, actor, what)

        monkeypatch.setattr(cluster, "_get", signalled_then_get)
        try:
            with RoleGroup("corrector", Probe, _role(1, 0.25, 0), strategy="PACK", timeout_s=60) as group:
                with pytest.raises(StopRequested, match="round 1 correct"):
                    group.call(Probe.crash, Probe.Request([1]), what="round 1 correct")
        finally:
            STOP.clear()

