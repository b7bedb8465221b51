"""The one place that starts or joins Ray, places role actors and waits on them.

* ``cluster.address`` empty: a private local Ray instance (``ray.init(address="local")``), never someone
  else's cluster on the same host; no dashboard unless asked; usage stats off; token auth off unless the
  environment says otherwise. ``auto`` or ``HOST:PORT``: join an existing cluster (the Slurm case).
* Each role (generator, corrector, trainer, judge) is a :class:`RoleGroup`, laid out by
  :func:`w2s.placement.role_layout` (the one bundle computation, also used by ``w2s plan``): actors of at most one
  GPU share one placement group with one bundle each (``cluster.placement_strategy``); an actor of N > 1 GPUs (a
  tensor-parallel vLLM engine) gets its own STRICT_PACK group of N one-GPU bundles on one node, runs itself on the
  first bundle without GPUs, captures its child tasks into the group, and finds its bundles in
  ``VLLM_RAY_BUNDLE_INDICES`` / ``VLLM_RAY_PER_WORKER_GPUS`` (vLLM's ray executor refuses bundles of more than one
  GPU, and its workers take one GPU each). Colocated roles (``cluster.colocate``) take seats in the one placement
  group of GPUs they share (:class:`w2s.placement.GpuPool`, placed by the role services), which a group never
  removes.
* Every remote wait goes through :func:`wait_all`: interruptible by SIGTERM/SIGUSR2, bounded by liveness
  (the actors waited on are pinged on a concurrency group of their own, so a ping is answered while a long
  call runs; one that answers no ping for ``cluster.liveness_timeout_s`` is taken for hung), by
  ``cluster.start_timeout_s`` while actors start, and by ``cluster.rpc_timeout_s`` when a total cap is set.
  An actor's death or hang becomes a :class:`WorkerError` naming role, rank, node, pid and logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from w2s.errors import ActorRaised, ClusterError, WorkerError
from w2s.head import ABANDONED, PRIVATE_HEAD, abandoned, head_pids
from w2s.placement import PLACEMENT_WAIT_S, place_role, remove_placement_groups, role_layout
from w2s.stopping import STOP, StopRequested, reclaim_stop_signals, stop_deferred
from w2s.workers.dispatch import Dispatch, dispatch_of, register, shard

log = logging.getLogger("w2s.cluster")

# Environment the driver passes on to every actor (when set), so that actors on other nodes see the same
# offline switches and caches as the driver.
FORWARDED_ENV = ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "W2S_CACHE", "HF_HOME",
                 "TOKENIZERS_PARALLELISM", "WANDB_MODE", "NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME",
                 "OMP_NUM_THREADS", "PYTHONPATH"]


# Where role actors write their stdout/stderr (RUN_DIR/logs), and at what log level; set by RayCluster for a run.
ACTOR_LOGS: dict[str, str] = {}


@contextlib.contextmanager
def _own_sigterm_kept() -> Iterator[None]:
    """While Ray starts, keep the driver's own SIGTERM handler (the stop-at-a-safe-point flag) where there is one:
    Ray's would exit mid-start-up with status 15 or 1 and no word of how to resume."""
    import signal

    import ray._private.utils as ray_utils

    if not callable(signal.getsignal(signal.SIGTERM)):
        yield
        return
    original = ray_utils.set_sigterm_handler
    ray_utils.set_sigterm_handler = lambda _handler: None
    try:
        yield
    finally:
        ray_utils.set_sigterm_handler = original


@dataclass
class RayCluster:
    """Context manager: Ray started (or joined) on enter, shut down on exit only if w2s started it.

    With ``actor_logs`` (a run's ``RUN_DIR/logs``) every role actor writes its output to ``ROLE-RANK.log`` there
    instead of having Ray relay it to the console line by line, unless ``log_level`` is DEBUG.
    """

    cfg: Any  # ClusterConfig
    started: bool = False
    reaper: Any = None  # the process that stops a private instance if this driver dies (w2s.reaper)
    actor_logs: str = ""
    log_level: str = "INFO"

    def __enter__(self) -> RayCluster:
        import ray

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # An ~/.ray/auth_token left by someone else would otherwise switch token auth on (Ray >= 2.5x).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        runtime_env = {"env_vars": env}
        quiet = bool(self.actor_logs) and self.log_level != "DEBUG"
        if quiet:
            ACTOR_LOGS.update(dir=self.actor_logs, level=self.log_level)
        if ray.is_initialized():  # a caller (a test, a notebook) already connected us
            return self
        from w2s import reaper

        if not self.cfg.address:
            self.reaper = reaper.start()
        try:
            with _own_sigterm_kept(), stop_deferred(), warnings.catch_warnings():
                # Ray's tip about a future default for GPU visibility of 0-GPU actors is no news to a user.
                warnings.simplefilter("ignore", FutureWarning)
                if self.cfg.address:
                    ray.init(address=self.cfg.address, runtime_env=runtime_env, log_to_driver=not quiet,
                             configure_logging=False)
                else:
                    ray.init(address="local", num_cpus=self.cfg.num_cpus or None,
                             num_gpus=self.cfg.num_gpus or None, include_dashboard=self.cfg.include_dashboard,
                             dashboard_host=self.cfg.dashboard_host, _temp_dir=self.cfg.temp_dir or None,
                             runtime_env=runtime_env, log_to_driver=not quiet, configure_logging=False)
        except BaseException as e:  # Ray raises many types here; all mean the same to the user
            reaper.stop(self.reaper)  # sweeps what had started (Ctrl-C: Ray's agents outlive an interrupted start)
            if not isinstance(e, Exception):
                raise
            if STOP.is_set():  # the stop signal reached Ray's starting processes too (a whole process group)
                raise StopRequested("Ray's start-up") from None
            where = self.cfg.address or "a private local instance"
            raise ClusterError(f"could not start or join Ray ({where}): {e}. Check cluster.address; on Slurm, "
                               "the head's `ray start` log under RUN_DIR/slurm/.") from e
        self.started = True
        if not self.cfg.address:
            PRIVATE_HEAD.update(head_pids())
            ABANDONED.clear()  # a new instance: an earlier command's (in this process) is no longer in question
        reclaim_stop_signals()
        if STOP.is_set():  # SIGTERM/SIGUSR2 arrived while Ray started
            self.__exit__()
            raise StopRequested("Ray's start-up")
        return self

    def __exit__(self, *exc: Any) -> None:
        import ray

        from w2s import reaper

        ACTOR_LOGS.clear()
        with stop_deferred():
            if abandoned():
                # Stopped with its head (a SIGTERM to the whole process group or job step): Ray's shutdown, now
                # or at exit, would wait up to a minute for the dead GCS. The reaper sweeps what is left, and the
                # CLI exits without Ray's teardown.
                import atexit

                atexit.unregister(ray.shutdown)
            elif self.started and ray.is_initialized():
                ray.shutdown()
            reaper.stop(self.reaper)
        PRIVATE_HEAD.clear()
        self.reaper = None

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


# ----------------------------------------------------------------------------------------------- layout
LIVENESS_GROUP = "w2s_liveness"  # the actors' concurrency group for pings, apart from their work methods
DEFAULT_LIVENESS_S = 600.0  # ClusterConfig.liveness_timeout_s's default (for callers without a config)


# ----------------------------------------------------------------------------------------------- actors
def redirect_output(path: str, level: str) -> None:
    """Send this process's stdout and stderr (and its children's, such as vLLM's engine core) to ``path``, and
    set Python's log level. A path that cannot be written (a node without the run directory) leaves Ray's own
    worker logs in place."""
    import logging
    import sys

    logging.basicConfig(level=getattr(logging, level, logging.INFO), force=True,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not path:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _with_log(cls: type) -> type:
    """``cls`` whose constructor first calls :func:`redirect_output` (its ``w2s_log`` and ``w2s_log_level``
    keyword arguments), before any model or library is loaded."""

    class Logged(cls):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, w2s_log: str = "", w2s_log_level: str = "INFO", **kwargs: Any):
            redirect_output(w2s_log, w2s_log_level)
            super().__init__(*args, **kwargs)

    Logged.__name__ = Logged.__qualname__ = cls.__name__
    Logged.__doc__ = cls.__doc__
    return Logged


class RoleActorMixin:
    """Methods every role actor has (mixed into the worker classes)."""

    def where(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {"node_ip": ray.util.get_node_ip_address(), "hostname": socket.gethostname(), "pid": os.getpid(),
                "node_id": ctx.get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()]}

    def ping(self) -> dict[str, Any]:
        """Alive: what the actor is doing now (its w2s.progress snapshot), answered while a work method runs."""
        from w2s import progress

        return progress.snapshot()

    @register(Dispatch.ALL)
    def memory(self) -> dict[str, float]:
        """Peak resident memory of this actor's process and the processes it started (a vLLM engine's)."""
        from w2s.memory import tree_peak_mb

        return {"peak_mb": tree_peak_mb()}

    # Taking turns on shared GPUs and closing: each role's worker says what it frees (nothing, by default).
    @register(Dispatch.ALL)
    def sleep(self, discard: bool = False) -> bool:
        """Another role takes the GPU this actor shares: free its GPU memory, keep the process; whether any was
        freed. ``discard``: the model it holds is replaced before its next work, so it need not be kept."""
        return False

    @register(Dispatch.ALL)
    def wake_up(self) -> Any:
        """This actor's turn again: take back what :meth:`sleep` freed."""

    @register(Dispatch.ALL)
    def close(self) -> None:
        """Free what the actor holds outside its own process (an engine's workers) before it is killed."""


@dataclass
class ActorHandle:
    role: str
    rank: int
    actor: Any
    where: dict[str, Any] = field(default_factory=dict)
    pingable: bool = False  # has the liveness concurrency group (actors started by a RoleGroup)
    log: str = ""  # the file its stdout/stderr go to (empty: Ray's worker logs)


class RoleGroup:
    """``num_actors`` actors of one role, placed as :func:`role_layout` says.

    Args:
        timeout_s: Optional cap on every wait of the group (``cluster.rpc_timeout_s``; 0: none).
        liveness_s: An actor answering no ping for this long is taken for hung (``cluster.liveness_timeout_s``).
        start_timeout_s: Longest the actors' constructors (model loading) may take (``cluster.start_timeout_s``).
    """

    def __init__(self, role: str, cls: type, role_cfg: Any, *, strategy: str, timeout_s: float,
                 liveness_s: float = DEFAULT_LIVENESS_S, start_timeout_s: float = 3600.0,
                 init_args: tuple = (), init_kwargs: dict | None = None, env: dict[str, str] | None = None,
                 pool: Any = None, offset: int = 0):
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.role, self.timeout_s, self.liveness_s = role, timeout_s, liveness_s
        self.layout = role_layout(role, role_cfg, strategy, pool=pool[0] if pool else None, offset=offset)
        self.actors: list[ActorHandle] = []
        # pool: (GpuPool, its placement group), kept by the caller; else the role's own groups, removed with it.
        self.owns_pgs = self.layout.pool is None
        self.pgs = place_role(self.layout, strategy, timeout_s=min(timeout_s or PLACEMENT_WAIT_S, PLACEMENT_WAIT_S)
                              ) if self.owns_pgs else [pool[1]]
        try:
            # A concurrency group of its own lets a ping be answered while a work method runs.
            logs = dict(ACTOR_LOGS)
            remote_cls = ray.remote(concurrency_groups={LIVENESS_GROUP: 1})(_with_log(cls) if logs else cls)
            for rank, slot in enumerate(self.layout.slots):
                opts: dict[str, Any] = {
                    "num_cpus": slot.num_cpus, "num_gpus": slot.num_gpus, "max_restarts": 0, "name": None,
                    "scheduling_strategy": PlacementGroupSchedulingStrategy(
                        self.pgs[slot.group], placement_group_bundle_index=slot.bundle,
                        # vLLM's workers (child actors) land in this actor's bundles.
                        placement_group_capture_child_tasks=len(slot.bundles) > 1),
                }
                if env or slot.env:
                    opts["runtime_env"] = {"env_vars": {**(env or {}), **slot.env}}
                kwargs = dict(init_kwargs or {})
                log = os.path.join(logs["dir"], f"{role}-{rank}.log") if logs else ""
                if logs:
                    kwargs.update(w2s_log=log, w2s_log_level=logs["level"])
                actor = remote_cls.options(**opts).remote(*init_args, **kwargs)
                self.actors.append(ActorHandle(role, rank, actor, pingable=True, log=log))
            # No pings while the constructors run (an actor answers nothing before): the start has its own bound.
            cap, cap_name = start_timeout_s, "cluster.start_timeout_s"
            if timeout_s > 0 and (cap <= 0 or timeout_s < cap):
                cap, cap_name = timeout_s, "cluster.rpc_timeout_s"
            wheres = wait_all([a.actor.where.remote() for a in self.actors], self.actors, what=f"{role}: start",
                              timeout_s=cap, liveness_s=0.0, cap_name=cap_name)
        except BaseException:
            self.shutdown()
            raise
        for a, w in zip(self.actors, wheres):
            a.where = w

    def call(self, method: Callable[..., Any], *args: Any, what: str = "", **kwargs: Any) -> list[Any]:
        """``method`` (a worker method, declared with :func:`~w2s.workers.dispatch.register`) called on the ranks as
        it declares: ``ALL``, the same call on every rank, one result per rank in rank order; ``ROWS``, the request
        (first argument) split into contiguous shards of its rows, one per rank, the results concatenated."""
        mode, name = dispatch_of(method), method.__name__
        if mode is Dispatch.ROWS:
            shards = shard(args[0], len(self.actors))
            refs = [getattr(a.actor, name).remote(part, *args[1:], **kwargs) for a, part in zip(self.actors, shards)]
        else:
            refs = [getattr(a.actor, name).remote(*args, **kwargs) for a in self.actors]
        results = wait_all(refs, self.actors, what=what or f"{self.role}.{name}", timeout_s=self.timeout_s,
                           liveness_s=self.liveness_s)
        return [x for part in results for x in part] if mode is Dispatch.ROWS else results

    def placements(self) -> list[dict[str, Any]]:
        """Each actor's role, rank and where it runs (with its GPUs; colocated: the pool's bundles it sits on)."""
        pooled = self.layout.pool is not None
        return [{"role": a.role, "rank": a.rank, **a.where,
                 **({"pool_bundles": list(slot.bundles)} if pooled else {})}
                for a, slot in zip(self.actors, self.layout.slots)]

    def shutdown(self, wait_s: float = 15.0) -> None:
        """Kill the actors and remove their placement groups. ``ray.kill`` returns before the processes exit: the
        actors on this host, and what they started, are waited for (up to ``wait_s``), so that their memory is
        free when this returns (on other nodes the workers' own ``close`` has stopped their engines)."""
        import psutil
        import ray

        if abandoned():  # stopped with the head gone: Ray would wait a minute on it; the reaper sweeps the actors
            return
        procs = []
        for a in self.actors:
            if a.where.get("hostname") == socket.gethostname() and a.where.get("pid"):
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(int(a.where["pid"]))
                    procs += [p, *p.children(recursive=True)]
        for a in self.actors:
            try:
                ray.kill(a.actor, no_restart=True)
            except Exception:  # already dead
                pass
        if self.owns_pgs:
            remove_placement_groups(self.pgs)
        psutil.wait_procs(procs, timeout=wait_s)

    def __enter__(self) -> RoleGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()


# ----------------------------------------------------------------------------------------------- waiting
class _Liveness:
    """Pings the actors a wait is blocked on, one ping in flight per actor, a new one ``interval_s`` after each
    answer; reports the first actor whose last answer is older than ``limit_s``."""

    def __init__(self, actors: list[ActorHandle], limit_s: float):
        now = time.monotonic()
        self.limit_s = limit_s
        # Every 2 s at most: the answers also feed the stage's progress line.
        self.interval_s = min(max(limit_s / 4, 0.5), 2.0)
        self.answered = {id(a): now for a in actors if a.pingable}
        self.in_flight: dict[int, Any] = {}
        self.progress: dict[int, dict[str, Any]] = {}  # the last snapshot each actor answered with

    def hung(self, waiting: list[ActorHandle]) -> tuple[ActorHandle, float] | None:
        import ray

        now = time.monotonic()
        if self.in_flight:
            refs = list(self.in_flight.values())
            ready = set(ray.wait(refs, num_returns=len(refs), timeout=0)[0])
            for key, ref in list(self.in_flight.items()):
                if ref in ready:
                    del self.in_flight[key]
                    try:
                        snapshot = ray.get(ref)
                        self.answered[key] = now
                        self.progress[key] = snapshot if isinstance(snapshot, dict) else {}
                    except ray.exceptions.RayError:  # died: the pending call itself reports that
                        self.answered[key] = float("inf")
        for a in waiting:
            key = id(a)
            if key not in self.answered:
                continue
            if now - self.answered[key] > self.limit_s:
                return a, now - self.answered[key]
            if key not in self.in_flight and now - self.answered[key] >= self.interval_s:
                self.in_flight[key] = a.actor.ping.options(concurrency_group=LIVENESS_GROUP).remote()
        return None


def wait_all(refs: list[Any], actors: list[ActorHandle], *, what: str, timeout_s: float,
             liveness_s: float = DEFAULT_LIVENESS_S, cap_name: str = "") -> list[Any]:
    """``ray.get`` of ``refs`` (``refs[i]`` a call on ``actors[i]``), checking every second for a stop request,
    for a hung actor (no ping answered for ``liveness_s``; 0: not checked) and for the optional total cap
    ``timeout_s`` (0: none). The first actor that dies, raises or hangs ends the wait with a WorkerError (a
    w2s error raised inside an actor is re-raised as it is)."""
    import ray

    from w2s.progress import LiveLine

    index = {ref: i for i, ref in enumerate(refs)}
    results: dict[int, Any] = {}
    pending = list(refs)
    start = time.monotonic()
    watch = _Liveness(actors, liveness_s) if liveness_s > 0 else None
    # A stop signal sets STOP, checked here every second.
    with stop_deferred(), contextlib.closing(LiveLine(what)) as line:
        while pending:
            if STOP.is_set():
                raise StopRequested(what)
            if timeout_s > 0 and time.monotonic() - start > timeout_s:
                slow = actors[index[pending[0]]]
                cap = cap_name or "cluster.rpc_timeout_s"
                raise WorkerError(_describe_failure(slow, what, f"no answer within {cap}={timeout_s:g} s (raise it, "
                                                    "or 0 for no cap)"))
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            for ref in done:
                i = index[ref]
                try:
                    results[i] = _get(ref, actors[i], what)
                except (WorkerError, ActorRaised):
                    if STOP.is_set():  # the stop signal reached the actor too (a whole process group, a job step)
                        raise StopRequested(what) from None
                    raise
            if watch and pending:
                line.show([watch.progress.get(id(a), {}) for a in actors])
                stuck = watch.hung([actors[index[r]] for r in pending])
                if stuck:
                    actor, silent = stuck
                    raise WorkerError(_describe_failure(actor, what, (
                        f"it answered no liveness ping for {silent:.0f} s (cluster.liveness_timeout_s={liveness_s:g}): "
                        "its process is alive to Ray but frozen (stopped, swapping, or stuck in native code that holds "
                        "Python's GIL). `py-spy dump --pid PID` on that node shows where; raise "
                        "cluster.liveness_timeout_s if it is only slow")))
    return [results[i] for i in range(len(refs))]


def _get(ref: Any, actor: ActorHandle, what: str) -> Any:
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError as e:
        raise WorkerError(_describe_failure(actor, what, f"the actor died ({type(e).__name__})")) from e
    except ray.exceptions.RayTaskError as e:
        cause = e.cause if getattr(e, "cause", None) is not None else e
        if isinstance(cause, Exception) and cause.__class__.__module__.startswith("w2s"):
            raise cause from None  # our own errors keep their message (a DataError stays a DataError)
        raise ActorRaised(_describe_failure(actor, what, f"it raised {cause!r} at {last_frame(str(e))}")) from e


def last_frame(traceback_text: str) -> str:
    """``FILE:LINE in FUNCTION: CODE`` of the last frame of a traceback's text (Ray's RayTaskError holds the
    actor's), or ``an unknown place``."""
    import re

    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n\s*([^\n]*)', traceback_text)
    if not frames:
        return "an unknown place"
    path, line, func, code = frames[-1]
    return f"{path}:{line} in {func}" + (f": {code.strip()}" if code.strip() else "")


def _describe_failure(actor: ActorHandle | None, what: str, problem: str) -> str:
    if actor is None:
        return f"{what}: {problem}. Ray's logs: {session_log_dir()}"
    w = actor.where
    node = f"{w.get('hostname', '?')} ({w.get('node_ip', '?')}), pid {w.get('pid', '?')}" if w else "unknown node"
    problem = problem.replace("--pid PID", f"--pid {w.get('pid', 'PID')}")
    logs = (f"{actor.log} (and Ray's logs in {session_log_dir()})" if actor.log else
            f"{session_log_dir()} (files worker-*-{w.get('pid', '*')}.*)")
    return f"{what}: {actor.role} rank {actor.rank} on {node}: {problem}. Its stdout/stderr are in {logs}."
