"""How a role's actors are laid out in placement groups (:func:`role_layout`: the one bundle computation, also
used by ``w2s plan``), how the groups are placed (:func:`place_role`), and why they cannot be when they cannot
(:func:`placement_problem`: the arithmetic and the fix). See :mod:`w2s.cluster` for the layout rules.

Roles named in ``cluster.colocate`` share GPUs as OpenRLHF's hybrid engine does (:class:`GpuPool`): one placement
group of whole-GPU bundles, each bundle a seat for every colocated role (a share of its GPU and the role's CPUs);
rank *i* of every colocated role sits on bundle *i* (an actor of *k* GPUs, a tensor-parallel engine, on bundles
*ik* .. *ik+k-1*), so no two ranks of one role share a GPU, and the roles take turns in GPU memory
(:mod:`w2s.roles`). A role with fewer GPUs than the pool may hold several groups at once, side by side
(``offset``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from w2s.errors import ClusterError

PLACEMENT_WAIT_S = 120.0  # how long a role's placement groups may take to become ready before it is refused


@dataclass(frozen=True)
class ActorSlot:
    """Where one actor of a role goes: placement group ``group``, running on ``bundle``, reserving ``bundles``."""

    group: int
    bundle: int
    bundles: tuple[int, ...]
    num_cpus: float
    num_gpus: float
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class GpuPool:
    """The GPUs the roles of ``cluster.colocate`` share: ``bundles`` one per GPU, placed as one group."""

    roles: tuple[str, ...]
    widths: tuple[int, ...]  # GPUs per actor of each role (k: a tensor-parallel engine's bundles)
    cpus: tuple[float, ...]  # CPUs per actor of each role
    bundles: tuple[dict[str, float], ...]
    strategy: str

    @property
    def share(self) -> float:
        """The part of one GPU each colocated role's actor (or engine worker) reserves there."""
        return 1.0 / len(self.roles)

    @property
    def groups(self) -> tuple[tuple[tuple[dict[str, float], ...], str], ...]:
        return ((self.bundles, self.strategy),)

    def width(self, role: str) -> int:
        return self.widths[self.roles.index(role)]

    @property
    def seat_cpus(self) -> float:
        """The CPUs of one GPU's seat (every bundle is alike: one actor of each colocated role)."""
        return sum(self.cpus)

    @property
    def total_cpus(self) -> float:
        return self.seat_cpus * len(self.bundles)

    def describe_seat(self) -> str:
        """``generator 2 + corrector 2 + trainer 6``: the CPUs of a seat, role by role."""
        return " + ".join(f"{r} {c:g}" for r, c in zip(self.roles, self.cpus))


def gpu_pool(cluster_cfg: Any) -> GpuPool | None:
    """The pool of ``cluster.colocate`` (None when no role is colocated): as many one-GPU bundles as the widest
    colocated role needs (actors x GPUs per actor), each with a seat for every colocated role (its CPUs). The
    bundles are all alike, on purpose: Ray places the bundles of a group largest first, so bundles of different
    sizes could be reordered across nodes, split a tensor-parallel engine's consecutive GPUs, or fail to fill nodes
    they would fit exactly. An engine of k GPUs thus reserves its CPUs on each of its k GPUs (it uses them on the
    first).

    Raises:
        ClusterError: a colocated role that asks for no GPU or for a fraction of one (validation says so first).
    """
    roles = tuple(str(r) for r in (cluster_cfg.get("colocate") or []))
    if not roles:
        return None
    widths, cpus, size = [], [], 0
    for r in roles:
        rc = cluster_cfg[r]
        gpus = float(rc.num_gpus_per_actor)
        if gpus < 1 or gpus != int(gpus):
            raise ClusterError(f"cluster.{r}.num_gpus_per_actor={gpus:g}: a colocated role's actors take whole GPUs "
                               f"(cluster.colocate shares them). Fix: set it to 1 (or k for a tensor-parallel "
                               f"engine), or take {r} out of cluster.colocate.")
        widths.append(int(gpus))
        cpus.append(float(rc.num_cpus_per_actor))
        size = max(size, int(rc.num_actors) * int(gpus))
    seat = sum(cpus)
    bundles = [{"GPU": 1.0} | ({"CPU": seat} if seat else {}) for _ in range(size)]  # GpuPool.seat_cpus
    return GpuPool(roles, tuple(widths), tuple(cpus), tuple(bundles), str(cluster_cfg.placement_strategy))


@dataclass(frozen=True)
class RoleLayout:
    """The placement groups of one role and the slot of each of its actors (see the module docstring)."""

    role: str
    key: str  # the config section the fixes name (cluster.<role>)
    cpus_per_actor: float
    gpus_per_actor: float
    groups: tuple[tuple[tuple[dict[str, float], ...], str], ...]  # (bundles, strategy) per placement group
    slots: tuple[ActorSlot, ...]
    pool: GpuPool | None = None  # colocated: its actors sit in the pool's one group (``groups`` is empty)

    @property
    def tensor_parallel(self) -> int:
        """GPUs of one tensor-parallel actor (0: actors of at most one GPU, one bundle each)."""
        return int(self.gpus_per_actor) if self.gpus_per_actor > 1 else 0

    def total(self, resource: str) -> float:
        """What the role reserves (colocated: its seats in the pool, a share of each GPU it sits on)."""
        if self.pool is not None:
            if resource == "GPU":
                return sum(len(s.bundles) for s in self.slots) * self.pool.share
            return sum(s.num_cpus for s in self.slots) if resource == "CPU" else 0.0
        return sum(b.get(resource, 0.0) for bundles, _ in self.groups for b in bundles)

    def describe_actor(self) -> str:
        return f"{self.gpus_per_actor:g} GPU(s) + {self.cpus_per_actor:g} CPU(s)"


def role_layout(role: str, role_cfg: Any, strategy: str, *, key: str = "", pool: GpuPool | None = None,
                offset: int = 0) -> RoleLayout:
    """How ``cluster.<role>`` is placed with ``cluster.placement_strategy`` = ``strategy`` (``key``: the config
    section to name in fixes, default ``cluster.<role>``); in ``pool`` when the role is colocated, from its bundle
    ``offset`` on.

    Raises:
        ClusterError: more than one GPU per actor that is not a whole number; a colocated group beyond the pool.
    """
    n, cpus, gpus = int(role_cfg.num_actors), float(role_cfg.num_cpus_per_actor), float(role_cfg.num_gpus_per_actor)
    key = key or f"cluster.{role}"
    if pool is not None and role in pool.roles:
        return _pooled_layout(role, key, n, cpus, pool, offset)
    if gpus <= 1:  # whole or shared GPUs: one bundle per actor, the actor reserves all of it
        bundle = {"CPU": cpus} | ({"GPU": gpus} if gpus else {})
        slots = tuple(ActorSlot(0, i, (i,), cpus, gpus) for i in range(n))
        return RoleLayout(role, key, cpus, gpus, (((*(dict(bundle) for _ in range(n)),), strategy),), slots)
    if gpus != int(gpus):
        raise ClusterError(f"{key}.num_gpus_per_actor={gpus:g}: above 1, GPUs per actor must be a whole "
                           "number (the GPUs of one tensor-parallel engine). Fix: use 1, 2, 4 or 8.")
    k = int(gpus)
    # The actor's CPUs sit on its first bundle; every bundle has one GPU for one of vLLM's workers (which
    # reserve no CPU). STRICT_PACK: tensor parallelism needs its GPUs on one node.
    first = {"CPU": cpus, "GPU": 1.0} if cpus else {"GPU": 1.0}
    bundles = (first, *({"GPU": 1.0} for _ in range(k - 1)))
    env = {"VLLM_RAY_BUNDLE_INDICES": ",".join(str(b) for b in range(k)), "VLLM_RAY_PER_WORKER_GPUS": "1"}
    slots = tuple(ActorSlot(i, 0, tuple(range(k)), cpus, 0.0, env) for i in range(n))
    return RoleLayout(role, key, cpus, gpus, tuple((tuple(dict(b) for b in bundles), "STRICT_PACK") for _ in range(n)),
                      slots)


def _pooled_layout(role: str, key: str, n: int, cpus: float, pool: GpuPool, offset: int) -> RoleLayout:
    k, share = pool.width(role), pool.share
    if offset + n * k > len(pool.bundles):
        raise ClusterError(f"{key}: {n} actor(s) x {k} GPU(s) from GPU {offset} on do not fit the "
                           f"{len(pool.bundles)} GPUs of cluster.colocate")
    slots = []
    for i in range(n):
        first = offset + i * k
        if k == 1:
            slots.append(ActorSlot(0, first, (first,), cpus, share))
        else:  # the engine's workers (one per GPU) take the shares; the actor itself holds none
            env = {"VLLM_RAY_BUNDLE_INDICES": ",".join(str(first + j) for j in range(k)),
                   "VLLM_RAY_PER_WORKER_GPUS": f"{share:g}"}
            slots.append(ActorSlot(0, first, tuple(range(first, first + k)), cpus, 0.0, env))
    return RoleLayout(role, key, cpus, float(k), (), tuple(slots), pool)


def _node_resources() -> list[dict[str, float]]:
    import ray

    return [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]


def _sum(values: list[float]) -> str:
    """``8``, ``8+4 = 12`` or ``4 x 8 = 32``: per-node amounts and their total."""
    if len(values) == 1:
        return f"{values[0]:g}"
    if len(set(values)) == 1:
        return f"{len(values)} x {values[0]:g} = {sum(values):g}"
    return f"{'+'.join(f'{v:g}' for v in values)} = {sum(values):g}"


def placement_problem(layout: RoleLayout, strategy: str, placed: int = -1) -> str:
    """Why ``layout`` does not fit the cluster Ray is connected to, with the arithmetic and the fix."""
    import ray

    nodes = _node_resources()
    node_gpus = [float(r.get("GPU", 0)) for r in nodes]
    node_cpus = [float(r.get("CPU", 0)) for r in nodes]
    total_gpus, total_cpus, big = sum(node_gpus), sum(node_cpus), max(node_gpus, default=0.0)
    n, key, k = len(layout.slots), layout.key, layout.tensor_parallel
    need_gpus, need_cpus = layout.total("GPU"), layout.total("CPU")
    shape = f"{k} one-GPU bundles on one node (tensor parallel)" if k else layout.describe_actor()
    avail = ray.available_resources()
    text = (f"cannot place the {layout.role} role: {n} actor(s) x {shape} need {need_gpus:g} GPUs and "
            f"{need_cpus:g} CPUs; the cluster's {len(nodes)} node(s) have {_sum(node_gpus) if nodes else 0} GPUs and "
            f"{_sum(node_cpus) if nodes else 0} CPUs (free now: {avail.get('GPU', 0):g} GPUs, "
            f"{avail.get('CPU', 0):g} CPUs)")
    if placed >= 0:
        text += f"; {placed} of {len(layout.groups)} placement group(s) were placed"
    if k and k > big:
        fix = (f"a node has at most {big:g} GPUs: lower {key}.num_gpus_per_actor (and the tensor_parallel_size) to "
               f"that, or use nodes with >= {k} GPUs")
    elif need_gpus > total_gpus or need_cpus > total_cpus:
        limits = [sum(int(g // k) for g in node_gpus) if k else int(total_gpus // layout.gpus_per_actor)
                  ] if layout.gpus_per_actor else []
        limits += [int(total_cpus // layout.cpus_per_actor)] if layout.cpus_per_actor else []
        short = [f"{need:g} {what} needed, {there:g} there" for need, there, what in
                 ((need_gpus, total_gpus, "GPUs"), (need_cpus, total_cpus, "CPUs")) if need > there]
        fix = f"lower {key}.num_actors to {min(limits)} or its per-actor resources, or add nodes ({'; '.join(short)})"
    elif not k and strategy == "STRICT_PACK":
        fix = "use cluster.placement_strategy=PACK (STRICT_PACK puts all of a role's bundles on one node)"
    elif not k and strategy == "STRICT_SPREAD":
        fix = (f"use cluster.placement_strategy=PACK or SPREAD (STRICT_SPREAD puts each of the {n} actors on a "
               f"node of its own; there are {len(nodes)})")
    elif avail.get("GPU", 0) < need_gpus or avail.get("CPU", 0) < need_cpus:
        fix = f"other placement groups or actors hold resources now: let them finish, or lower {key}.num_actors"
    else:
        fix = f"the actors do not pack onto the nodes: lower {key}.num_actors or its per-actor resources"
    return f"{text}. Fix: {fix}."


def place_role(layout: RoleLayout, strategy: str, *, timeout_s: float = PLACEMENT_WAIT_S) -> list[Any]:
    """Create the placement groups of ``layout`` and wait until all are placed; returns them.

    Raises:
        ClusterError: they cannot all be placed within ``timeout_s`` (none is left behind), with the arithmetic.
    """
    import ray
    from ray.util.placement_group import placement_group

    nodes = _node_resources()
    k = layout.tensor_parallel
    # Beyond what the nodes have at all it can never be placed: say so now rather than after the wait.
    if (k and k > max((r.get("GPU", 0) for r in nodes), default=0)
            or layout.total("GPU") > sum(r.get("GPU", 0) for r in nodes)
            or layout.total("CPU") > sum(r.get("CPU", 0) for r in nodes)):
        raise ClusterError(placement_problem(layout, strategy))
    pgs = [placement_group(list(bundles), strategy=strat, name="") for bundles, strat in layout.groups]
    ready = [pg.ready() for pg in pgs]
    done, _ = ray.wait(ready, num_returns=len(ready), timeout=timeout_s)
    if len(done) < len(ready):
        message = placement_problem(layout, strategy, placed=len(done))
        remove_placement_groups(pgs)
        raise ClusterError(message)
    return pgs


def pool_problem(pool: GpuPool, why: str = "") -> str:
    """Why the colocated roles' GPUs cannot be placed on the cluster Ray is connected to, with the fix."""
    import ray

    nodes = _node_resources()
    node_gpus = [float(r.get("GPU", 0)) for r in nodes]
    node_cpus = [float(r.get("CPU", 0)) for r in nodes]
    n = len(pool.bundles)
    seat = pool.seat_cpus
    avail = ray.available_resources()
    text = (f"cannot place the GPUs shared by cluster.colocate={list(pool.roles)}: {n} GPU(s), each with the CPUs of "
            f"every colocated role's actor ({pool.describe_seat()} = {seat:g}), {n} GPUs and {pool.total_cpus:g} CPUs "
            "in all; the cluster's "
            f"{len(nodes)} node(s) have {_sum(node_gpus) if nodes else 0} GPUs and "
            f"{_sum(node_cpus) if nodes else 0} CPUs (free now: {avail.get('GPU', 0):g} GPUs, {avail.get('CPU', 0):g} "
            "CPUs)")
    if why:
        text += f"; {why}"
    short = [i for i, (g, c) in enumerate(zip(node_gpus, node_cpus)) if min(g, n) * seat > c + 1e-9]
    if n > sum(node_gpus):
        fix = f"lower the colocated roles' num_actors (x GPUs per actor) to at most {sum(node_gpus):g}, or add nodes"
    elif short:
        g = min(node_gpus[short[0]], n)
        fix = (f"a node of {g:g} GPUs needs {g:g} x {seat:g} = {g * seat:g} CPUs for the seats but has "
               f"{node_cpus[short[0]]:g}: lower num_cpus_per_actor of {', '.join(f'cluster.{r}' for r in pool.roles)} "
               f"so that they add up to at most {math.floor(node_cpus[short[0]] / g * 100) / 100:g} per GPU")
    else:
        fix = "other placement groups or actors hold resources now: let them finish, or lower the colocated num_actors"
    return f"{text}. Fix: {fix}."


def place_pool(pool: GpuPool, *, timeout_s: float = PLACEMENT_WAIT_S) -> Any:
    """Create the pool's placement group and wait until it is placed; returns it.

    Raises:
        ClusterError: it cannot be placed within ``timeout_s``, or a tensor-parallel engine's GPUs would fall on
            several nodes (none is left behind), with the arithmetic.
    """
    import ray
    from ray.util.placement_group import placement_group

    nodes = _node_resources()
    if (len(pool.bundles) > sum(r.get("GPU", 0) for r in nodes)
            or pool.total_cpus > sum(r.get("CPU", 0) for r in nodes)):
        raise ClusterError(pool_problem(pool))
    pg = placement_group(list(pool.bundles), strategy=pool.strategy, name="")
    done, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not done:
        message = pool_problem(pool)
        remove_placement_groups([pg])
        raise ClusterError(message)
    split = pool_split(pool, pool_nodes(pg))
    if split:
        remove_placement_groups([pg])
        raise ClusterError(pool_problem(pool, split))
    return pg


def pool_nodes(pg: Any) -> list[str]:
    """The node id of each of a placement group's bundles, in bundle order."""
    import ray

    table = ray.util.placement_group_table(pg)["bundles_to_node_id"]
    return [table[b] for b in sorted(table)]


def pool_split(pool: GpuPool, nodes: list[str]) -> str:
    """Empty when every tensor-parallel engine's GPUs (consecutive bundles) are on one node; else which are not."""
    for r, k in zip(pool.roles, pool.widths):
        for first in range(0, len(nodes) - k + 1, k) if k > 1 else ():
            if len(set(nodes[first:first + k])) > 1:
                return (f"{r}'s tensor-parallel engine on GPUs {first}..{first + k - 1} would span several nodes "
                        "(tensor parallelism needs them on one)")
    return ""


def remove_placement_groups(pgs: list[Any]) -> None:
    import ray

    from w2s.head import abandoned

    if abandoned():  # stopped with the head gone: each removal would wait a minute on it (w2s.head)
        return
    for pg in pgs:
        try:
            ray.util.remove_placement_group(pg)
        except Exception:  # already removed, or Ray is shutting down
            pass


def fits_on_nodes(groups: Any, per_node: list[dict[str, float]]) -> bool:
    """Whether placement groups ``groups`` ((bundles, strategy) each) can be placed on nodes with ``per_node`` free
    resources: SPREAD bundles each on a node of its own while there are nodes enough (what the recipe asks for,
    so roles holding those nodes give way), STRICT_PACK groups on one node, PACK bundles anywhere (greedy, on the
    node with most room first)."""
    free = [dict(n) for n in per_node]

    def take(node: dict[str, float], bundle: dict[str, float]) -> bool:
        if all(node.get(r, 0.0) + 1e-9 >= v for r, v in bundle.items()):
            for r, v in bundle.items():
                node[r] = node.get(r, 0.0) - v
            return True
        return False

    for bundles, strategy in groups:
        if "SPREAD" in strategy:
            used: set[int] = set()
            for bundle in bundles:
                fresh = len(used) < len(free)  # a node of its own while there is one
                order = sorted((i for i in range(len(free)) if not (fresh and i in used)),
                               key=lambda i: -free[i].get("CPU", 0.0))
                placed = next((i for i in order if take(free[i], bundle)), None)
                if placed is None:
                    return False
                used.add(placed)
        elif strategy == "STRICT_PACK":  # the whole group on one node
            for i in sorted(range(len(free)), key=lambda i: -free[i].get("CPU", 0.0)):
                trial = dict(free[i])
                if all(take(trial, b) for b in bundles):
                    free[i] = trial
                    break
            else:
                return False
        else:  # PACK: as few nodes as Ray can, any of them
            for bundle in bundles:
                if not any(take(free[i], bundle) for i in sorted(range(len(free)),
                                                                 key=lambda i: -free[i].get("CPU", 0.0))):
                    return False
    return True
