"""The one place that starts or joins Ray, places role actors and waits on them.

* ``cluster.address`` empty: a private local Ray instance (``ray.init(address="local")``), never someone
  else's cluster on the same host; no dashboard unless asked; usage stats off; token auth off unless the
  environment says otherwise. ``auto`` or ``HOST:PORT``: join an existing cluster (the Slurm case).
* Each role (generator, corrector, trainer, judge) is a :class:`RoleGroup`: its actors live in one
  placement group whose bundles are the role's ``cluster.<role>`` resources.
* Every remote wait goes through :func:`wait_all`: bounded by ``cluster.rpc_timeout_s``, interruptible by
  SIGTERM/SIGUSR2, and an actor's death becomes a :class:`WorkerError` naming role, rank, node and logs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from w2s.errors import ClusterError, WorkerError

log = logging.getLogger("w2s.cluster")

# Environment the driver passes on to every actor (when set), so that actors on other nodes see the same
# offline switches and caches as the driver.
FORWARDED_ENV = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "W2S_CACHE", "HF_HOME",
                 "TOKENIZERS_PARALLELISM", "WANDB_MODE", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME",
                 "OMP_NUM_THREADS", "PYTHONPATH"]


class StopRequested(Exception):
    """SIGTERM or SIGUSR2 arrived: the driver stops at the next safe point."""


STOP = threading.Event()


@dataclass
class RayCluster:
    """Context manager: Ray started (or joined) on enter, shut down on exit only if w2s started it."""

    cfg: Any  # ClusterConfig
    started: bool = False

    def __enter__(self) -> RayCluster:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # An ~/.ray/auth_token left by someone else would otherwise switch token auth on (Ray >= 2.5x).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        runtime_env = {"env_vars": env}
        if ray.is_initialized():  # a caller (a test, a notebook) already connected us
            return self
        try:
            if self.cfg.address:
                ray.init(address=self.cfg.address, runtime_env=runtime_env, log_to_driver=True,
                         configure_logging=False)
            else:
                ray.init(address="local", num_cpus=self.cfg.num_cpus or None, num_gpus=self.cfg.num_gpus or None,
                         include_dashboard=self.cfg.include_dashboard, dashboard_host=self.cfg.dashboard_host,
                         _temp_dir=self.cfg.temp_dir or None, runtime_env=runtime_env, log_to_driver=True,
                         configure_logging=False)
        except Exception as e:  # Ray raises many types here; all mean the same to the user
            where = self.cfg.address or "a private local instance"
            raise ClusterError(f"could not start or join Ray ({where}): {e}. Check cluster.address; on Slurm, "
                               "the head's `ray start` log under RUN_DIR/slurm/.") from e
        self.started = True
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        if self.started and ray.is_initialized():
            ray.shutdown()

    def describe(self) -> dict[str, Any]:
        """Alive nodes with their addresses and resources (written to RUN_DIR/cluster.json)."""
        import ray

        nodes = [{"node_id": n["NodeID"], "ip": n["NodeManagerAddress"], "hostname": n.get("NodeManagerHostname", ""),
                  "alive": n["Alive"], "resources": n.get("Resources", {})} for n in ray.nodes()]
        return {"nodes": nodes, "ray_session_dir": session_log_dir()}


def session_log_dir() -> str:
    """Where Ray keeps this session's logs (each worker's stdout/stderr)."""
    try:
        import ray

        return os.path.join(ray._private.worker.global_worker.node.get_session_dir_path(), "logs")
    except Exception:  # not connected, or Ray moved the private attribute
        return "the Ray session's logs folder (ray/session_latest/logs under Ray's temp dir)"


# ----------------------------------------------------------------------------------------------- actors
class RoleActorMixin:
    """Methods every role actor has (mixed into the worker classes)."""

    def where(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(), "pid": os.getpid(),
                "node_id": ctx.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def ping(self) -> bool:
        return True


@dataclass
class ActorHandle:
    role: str
    rank: int
    actor: Any
    where: dict[str, Any] = field(default_factory=dict)


class RoleGroup:
    """``num_actors`` actors of one role, placed in one placement group."""

    def __init__(self, role: str, cls: type, role_cfg: Any, *, strategy: str, timeout_s: float,
                 init_args: tuple = (), init_kwargs: dict | None = None, env: dict[str, str] | None = None):
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.role, self.timeout_s = role, timeout_s
        n, cpus, gpus = int(role_cfg.num_actors), float(role_cfg.num_cpus_per_actor), float(role_cfg.num_gpus_per_actor)
        bundle = {"CPU": cpus} | ({"GPU": gpus} if gpus else {})
        self.pg = placement_group([dict(bundle) for _ in range(n)], strategy=strategy, name="")
        ready = self.pg.ready()
        done, _ = ray.wait([ready], timeout=min(timeout_s, 120.0))
        if not done:
            avail = ray.available_resources()
            ray.util.remove_placement_group(self.pg)
            raise ClusterError(
                f"cannot place the {role} role: {n} actor(s) x {bundle} ({strategy}) do not fit the cluster "
                f"(available now: CPU {avail.get('CPU', 0):g}, GPU {avail.get('GPU', 0):g}). Lower "
                f"cluster.{role}.num_actors or its per-actor resources, or use cluster.placement_strategy=PACK.")
        remote_cls = ray.remote(cls)
        self.actors: list[ActorHandle] = []
        for rank in range(n):
            opts: dict[str, Any] = {
                "num_cpus": cpus, "num_gpus": gpus, "max_restarts": 0, "name": None,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=rank),
            }
            if env:
                opts["runtime_env"] = {"env_vars": env}
            actor = remote_cls.options(**opts).remote(*init_args, **(init_kwargs or {}))
            self.actors.append(ActorHandle(role, rank, actor))
        wheres = wait_all([a.actor.where.remote() for a in self.actors], self.actors, what=f"{role}: start",
                          timeout_s=timeout_s)
        for a, w in zip(self.actors, wheres):
            a.where = w

    def call_all(self, method: str, *args: Any, what: str = "", **kwargs: Any) -> list[Any]:
        """The same call on every actor (ONE_TO_ALL); results in rank order."""
        refs = [getattr(a.actor, method).remote(*args, **kwargs) for a in self.actors]
        return wait_all(refs, self.actors, what=what or f"{self.role}.{method}", timeout_s=self.timeout_s)

    def map_shards(self, method: str, items: list[Any], *args: Any, what: str = "",
                   on_progress: Callable[[int, int], None] | None = None, **kwargs: Any) -> list[Any]:
        """Split ``items`` into contiguous shards, one per actor, call ``method(shard, ...)``; concatenate results."""
        n = len(self.actors)
        bounds = [(len(items) * i // n, len(items) * (i + 1) // n) for i in range(n)]
        refs = [getattr(a.actor, method).remote(items[lo:hi], *args, **kwargs)
                for a, (lo, hi) in zip(self.actors, bounds)]
        parts = wait_all(refs, self.actors, what=what or f"{self.role}.{method}", timeout_s=self.timeout_s,
                         on_progress=on_progress)
        return [x for part in parts for x in part]

    def placements(self) -> list[dict[str, Any]]:
        return [{"role": a.role, "rank": a.rank, **a.where} for a in self.actors]

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            try:
                ray.kill(a.actor, no_restart=True)
            except Exception:  # already dead
                pass
        try:
            ray.util.remove_placement_group(self.pg)
        except Exception:
            pass

    def __enter__(self) -> RoleGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


def wait_all(refs: list[Any], actors: list[ActorHandle], *, what: str, timeout_s: float,
             on_progress: Callable[[int, int], None] | None = None) -> list[Any]:
    """``ray.get`` with a deadline, a stop check every second, and actor deaths turned into WorkerError."""
    import ray

    pending = list(refs)
    deadline = time.monotonic() + timeout_s
    while pending:
        if STOP.is_set():
            raise StopRequested(what)
        if time.monotonic() > deadline:
            slow = [a for r, a in zip(refs, actors) if r in pending]
            raise WorkerError(_describe_failure(slow[0] if slow else None, what,
                                                f"no answer within cluster.rpc_timeout_s={timeout_s:g} s"))
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
        if done and on_progress:
            on_progress(len(refs) - len(pending), len(refs))
    results = []
    for ref, actor in zip(refs, actors):
        try:
            results.append(ray.get(ref))
        except ray.exceptions.RayActorError as e:
            raise WorkerError(_describe_failure(actor, what, f"the actor died ({type(e).__name__})")) from e
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if getattr(e, "cause", None) is not None else e
            if isinstance(cause, Exception) and cause.__class__.__module__.startswith("w2s"):
                raise cause from None  # our own errors keep their message (a DataError stays a DataError)
            raise WorkerError(_describe_failure(actor, what, f"it raised {cause!r}")) from e
    return results


def _describe_failure(actor: ActorHandle | None, what: str, problem: str) -> str:
    if actor is None:
        return f"{what}: {problem}. Ray's logs: {session_log_dir()}"
    w = actor.where
    node = f"{w.get('hostname', '?')} ({w.get('node_ip', '?')}), pid {w.get('pid', '?')}" if w else "unknown node"
    return (f"{what}: {actor.role} rank {actor.rank} on {node}: {problem}. Its stdout/stderr are in "
            f"{session_log_dir()} (files worker-*-{w.get('pid', '*')}.*).")


def free_port() -> int:
    """A free TCP port on this node (for torch.distributed's rendezvous)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])
