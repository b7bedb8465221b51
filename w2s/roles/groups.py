"""The role groups a run holds: where each is placed, which one gives way when the next does not fit, whose turn it is
on shared GPUs, and which model each holds (the *model slot* rule: when new weights replace a model in place).

:class:`RoleGroups` is the one place that starts and stops role actors (:class:`w2s.cluster.RoleGroup`); the role
services (:mod:`w2s.roles.generator`, ``corrector``, ``trainer``, ``judge``) ask it for a group and call the group's
worker methods.

* **Placement and eviction.** Groups stay placed while they fit beside the next role; when a role cannot be placed
  next to them, the least recently used idle groups are shut down to make room.
* **Colocation** (``cluster.colocate``, as OpenRLHF's hybrid engine): one placement group of whole-GPU bundles
  (:class:`w2s.placement.GpuPool`, :mod:`w2s.roles.pool`), rank *i* of every colocated role on GPU *i*, placed once
  and kept for the run. Colocated groups take turns in GPU memory: before one works, every other sleeps (vLLM's
  sleep: weights to host memory, KV cache freed, or nothing kept when new weights come next,
  :meth:`RoleGroups.replaced_next`; transformers and score models: weights to host memory; trainer
  ranks: the kept DPO reference leaves the GPU) and keeps its process; it wakes up and checks that it answers as it
  did before sleeping.
* **Model slots** (:class:`ModelSlot`): a place for one model that successive checkpoints take in turn (the round
  loop's policy in the generator, the corrector's Aligner). A checkpoint whose tensors fit the loaded model's is
  taken in place and verified (the refit check); another architecture starts the slot's group afresh, saying why.
  Two models live in different slots (and engines) when their slot keys differ: another lineage (PopAlign's model
  ranks, another model's generator), other engine settings, another model section.

Every work call adds its wall time to :attr:`RoleGroups.work_s`; a stage's manifest records the share of its wall
time spent in work calls (``work_seconds``; for training, OpenRLHF's ``fit`` itself), the rest being start-up and
orchestration (``w2s bench loop`` prints both). A restarted driver builds fresh groups: nothing here outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf

from w2s.cluster import RoleActorMixin, RoleGroup
from w2s.config.plain import to_plain
from w2s.console import say
from w2s.errors import ClusterError
from w2s.head import abandoned
from w2s.placement import fits_on_nodes, role_layout
from w2s.roles.pool import SharedGpus


@dataclass
class HeldGroup:
    """One started role group and what it holds."""

    role: str
    key: str
    group: RoleGroup
    loaded: str = ""  # the model path its actors hold now
    last_used: float = field(default_factory=time.monotonic)
    asleep: bool = False  # colocated and another group works now
    replaced_next: bool = False  # its model is replaced before its next work: its next sleep keeps no weights
    info: dict[str, Any] = field(default_factory=dict)  # engine or provenance, asked once

    @property
    def pooled(self) -> bool:
        """Colocated: its actors sit on the shared GPUs (cluster.colocate), which stopping it does not free."""
        return self.group.layout.pool is not None


@dataclass(frozen=True)
class ModelSlot:
    """A place for one model in a role's group that successive checkpoints take in turn (see the module docstring).

    Args:
        role: the role whose group holds it.
        key: what makes two models interchangeable in place (see :func:`slot_key`).
        swap: the worker method that takes a checkpoint in place (it answers ``loaded`` False, with ``why``, when the
            checkpoint's tensors do not fit).
        worker: the actor class started when there is no group, or the checkpoint does not fit.
        init_args: the actor's constructor arguments after the model path.
    """

    role: str
    key: str
    swap: Callable[..., Any]
    worker: type
    init_args: tuple = ()


def slot_key(**parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


class RoleGroups:
    """The run's role groups (see the module docstring).

    Args:
        cfg: The whole config (``cluster`` for placement; the role services read the rest).
        on_placed: Called with every actor's placement record whenever a group starts (the run directory's
            ``cluster.json``).
    """

    def __init__(self, cfg: Any, *, on_placed: Callable[[list[dict[str, Any]]], None] | None = None):
        self.cfg, self.on_placed = cfg, on_placed
        self.held: dict[str, HeldGroup] = {}
        self.placements: list[dict[str, Any]] = []
        self.starts: Counter[str] = Counter()  # role -> groups started (a test and the bench read it)
        self.loads: Counter[str] = Counter()  # "role:path" -> times loaded (started or taken in place)
        self.turns: list[tuple[str, str]] = []  # (role, "sleep" | "wake_up") in order, for roles sharing GPUs
        self.refits: list[dict[str, Any]] = []  # each in-place load's refit check (role, path, what rank 0 measured)
        self.work_s = 0.0
        self.shared = SharedGpus(cfg.cluster)  # the GPUs colocated roles share, placed on first use

    # ------------------------------------------------------------------------------------------- placement
    def _fits(self, role: str) -> bool:
        """Whether ``role``'s placement groups fit what the nodes have free now, as their strategy places them
        (SPREAD: each bundle on a node of its own, as far as there are nodes; PACK: each group on one node)."""
        c = self.cfg.cluster
        layout = role_layout(role, c[role], c.placement_strategy)
        return fits_on_nodes(layout.groups, self._free_per_node())

    @staticmethod
    def _free_per_node() -> list[dict[str, float]]:
        import ray

        try:
            from ray._private.state import available_resources_per_node

            return [dict(free) for free in available_resources_per_node().values()]
        except Exception:  # no per-node view: the cluster's totals
            return [dict(ray.available_resources())]

    def _evict(self, keep: str = "", wait_s: float = 10.0) -> bool:
        """Shut the least recently used group of its own placement down (not ``keep``: colocated groups free no
        resources, their GPUs stay the pool's) and wait until Ray shows what it freed; False when there is none."""
        idle = sorted((h for k, h in self.held.items() if k != keep and not h.pooled), key=lambda h: h.last_used)
        if not idle:
            return False
        h = idle[0]
        say(f"{h.role}: stopped to make room for the next role")
        before = self._free_cpus_gpus()
        self._stop(h.key)
        # Ray shows a removed placement group's resources a moment later: judging the next fit before then stopped
        # one group more than needed on a loaded machine. Wait (at most wait_s) for the freed CPUs or GPUs.
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self._free_cpus_gpus() == before:
            time.sleep(0.1)
        return True

    def _free_cpus_gpus(self) -> list[tuple[float, float]]:
        """Free CPUs and GPUs per node (not memory: its figures move on their own)."""
        return [(free.get("CPU", 0.0), free.get("GPU", 0.0)) for free in self._free_per_node()]

    def _stop(self, key: str) -> None:
        h = self.held.pop(key)
        with contextlib.suppress(Exception):  # its close() frees the engine's processes; a dead actor has none
            h.group.call(RoleActorMixin.close, what=f"{h.role}: close")
        h.group.shutdown()

    def shares_gpu(self, role: str) -> bool:
        """Whether ``role`` is colocated (``cluster.colocate``): its actors share GPUs with other roles' actors."""
        return self.shared.shares(role)

    def _take_turn(self, role: str, h: HeldGroup | None = None, *, wake: bool = True) -> None:
        """Before ``role`` works (or starts) on GPUs it shares: every other colocated group sleeps (another group
        of the same role too: it sits on GPUs that this one's ranks may share with other roles), ``h`` wakes
        (unless not ``wake``: new weights are about to wake it)."""
        if not self.shares_gpu(role):
            return
        for other in self.held.values():
            if other is not h and not other.asleep and other.pooled:
                discard = other.replaced_next
                freed = other.group.call(RoleActorMixin.sleep, discard, what=f"{other.role}: sleep")
                other.asleep = True
                self.turns.append((other.role, "discard" if discard else "sleep"))
                say(f"{other.role}: asleep while {role} works" + (" (GPU memory freed)" if any(freed) else "")
                    + (", its weights dropped: new ones come next" if discard else ""))
        if h is not None and h.asleep and wake:
            h.group.call(RoleActorMixin.wake_up, what=f"{role}: wake up")  # each engine checks it answers as before
            self._awake(h)

    def _awake(self, h: HeldGroup) -> None:
        h.asleep = h.replaced_next = False
        self.turns.append((h.role, "wake_up"))

    def replaced_next(self, role: str, lineage: str) -> None:
        """The model ``role``'s slot of ``lineage`` holds is replaced before its next work (the round loop's policy
        once the round's answers are in): when it next sleeps it keeps no weights (vLLM's level 2), which the new
        ones then fill. Only a hint: woken for its old model instead, it reads it again from its checkpoint."""
        for h in self.held.values():
            if h.role == role and json.loads(h.key).get("lineage") == lineage:
                h.replaced_next = True

    def start(self, role: str, key: str, cls: type, *args: Any, loaded: str = "", actors: int = 0) -> HeldGroup:
        """Start a group of ``role`` (``actors``: that many instead of ``cluster.<role>.num_actors``)."""
        c = self.cfg.cluster
        role_cfg = c[role] if not actors else OmegaConf.merge(c[role], {"num_actors": actors})
        opts = dict(strategy=c.placement_strategy, timeout_s=float(c.rpc_timeout_s),
                    liveness_s=float(c.liveness_timeout_s), start_timeout_s=float(c.start_timeout_s), init_args=args)
        pooled = self.shares_gpu(role)
        if pooled:
            opts.update(pool=(self.shared.pool, self.shared.placed(self._free_per_node, self._evict)),
                        offset=self._seat(role, int(role_cfg.num_actors)))
        else:
            while not self._fits(role) and self._evict():
                pass
        self._take_turn(role)  # a new engine measures the GPU memory it may take: the sharing roles sleep first
        say(f"starting {role_cfg.num_actors} {role} actor(s)")
        try:
            try:
                group = RoleGroup(role, cls, role_cfg, **opts)
            except ClusterError:
                if pooled or all(h.pooled for h in self.held.values()):
                    raise
                while self._evict():  # resources held in ways _fits cannot see (another node's shape): all go
                    pass
                group = RoleGroup(role, cls, role_cfg, **opts)
        except ClusterError as e:
            if pooled or self.shared.pg is None:
                raise
            raise ClusterError(f"{e} The colocated roles hold {len(self.shared.pool.bundles)} GPU(s) for the whole "
                               f"run (cluster.colocate): add {role} to cluster.colocate, or give the cluster GPUs "
                               "beyond those") from e
        self.starts[role] += 1
        self.placements += group.placements()
        if self.on_placed:
            self.on_placed(self.placements)
        self.held[key] = HeldGroup(role, key, group, loaded)
        return self.held[key]

    def _seat(self, role: str, actors: int) -> int:
        """The pool GPU a new colocated group of ``role`` starts at (its least recently used group of that role
        stopped when the role's groups hold every place)."""
        while True:
            mine = [(h.key, {b for slot in h.group.layout.slots for b in slot.bundles}, h.last_used)
                    for h in self.held.values() if h.role == role and h.pooled]
            offset, stop = self.shared.seat(role, actors, mine)
            if offset >= 0:
                return offset
            say(f"{role}: stopped to make room for another {role} group")
            self._stop(stop)

    def use(self, role: str, key: str, start: Callable[[], HeldGroup]) -> HeldGroup:
        """The group of ``key``, started (``start()``) when there is none; its turn taken when it shares GPUs."""
        h = self.held.get(key)
        if h is None:
            h = start()
        else:
            self._take_turn(role, h)
        h.last_used = time.monotonic()
        return h

    # ------------------------------------------------------------------------------------------- model slots
    def hold(self, slot: ModelSlot, path: str) -> HeldGroup:
        """The group of ``slot`` holding ``path``: kept, given ``path``'s weights in place (``slot.swap``, then the
        refit check), or started (afresh when the checkpoint does not fit the loaded model)."""
        from w2s.assets import resolve_model_path

        given, path = path, resolve_model_path(path, progress=say)
        role, h = slot.role, self.held.get(slot.key)
        if h is not None:
            # Asleep and about to take new weights: the swap wakes it (after a discarding sleep, into the weights'
            # memory as it comes back; a full wake-up would first bring back the weights about to be replaced).
            self._take_turn(role, h, wake=h.loaded == path)
        if h is not None and h.loaded != path:
            swap = slot.swap.__name__
            answers = h.group.call(slot.swap, path, what=f"{role}: {swap}")
            if all(a["loaded"] for a in answers):
                if h.asleep:
                    self._awake(h)
                refit = answers[0]["refit"]
                self.refits.append({"role": role, "path": given, **refit})
                check = (f"refit check: mean |d log p| {max(a['refit']['mean_abs_diff'] for a in answers):.2g} "
                         f"<= {refit['tolerance']:g}" if refit["checked"] else f"refit not checked: {refit['why']}")
                say(f"{role}: took {path} in place ({max(a['seconds'] for a in answers):.1f} s; {check})")
                self.loads[f"{role}:{given}"] += 1
                h.loaded, h.info, h.replaced_next = path, {}, False
            else:
                say(f"{role}: {path} does not fit the loaded model ({answers[0]['why']}): starting afresh")
                self._stop(slot.key)
                h = None
        if h is None:
            h = self.start(role, slot.key, slot.worker, path, *slot.init_args, loaded=path)
            self.loads[f"{role}:{given}"] += 1
        h.last_used = time.monotonic()
        return h

    @contextlib.contextmanager
    def timed_work(self) -> Iterator[None]:
        """Count the wall time of the calls inside as work (:attr:`work_s`)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.work_s += time.perf_counter() - t0

    # ------------------------------------------------------------------------------------------- the run
    def pids(self) -> dict[str, list[int]]:
        """Role -> the pids of its live actors (one list per role, groups in start order)."""
        out: dict[str, list[int]] = {}
        for h in self.held.values():
            out.setdefault(h.role, []).extend(a.where.get("pid") for a in h.group.actors)
        return out

    def activity(self) -> dict[str, Any]:
        """What the services did so far: role groups started, the refit check of every in-place load, and the turns
        of colocated roles (each stage's manifest records its share; ``w2s bench loop`` prints it)."""
        return {"started": dict(self.starts), "refits": list(self.refits), "turns": [list(t) for t in self.turns]}

    def peak_memory_mb(self, role: str) -> float:
        """Peak resident memory of ``role``'s live actors together, each with the processes it started."""
        return sum(m["peak_mb"] for h in self.held.values() if h.role == role
                   for m in h.group.call(RoleActorMixin.memory, what=f"{role}: memory"))

    def close(self) -> None:
        """Stop every group (their engines' processes too) and give the colocated roles' GPUs back; a driver
        stopping with its Ray instance already gone (:func:`w2s.head.abandoned`) only forgets them."""
        if abandoned():
            self.held.clear()
            self.shared.pg = None
            return
        for key in list(self.held):
            self._stop(key)
        self.shared.release()


def without_path(model_cfg: Any) -> dict[str, Any]:
    """A model section but its path: what a slot key holds of it (the path is what changes in place)."""
    return {k: v for k, v in (to_plain(model_cfg) or {}).items() if k != "path"}
