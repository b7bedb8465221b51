"""``w2s plan``: where every role of a recipe lands on N nodes x G GPUs, placed for real on a logical Ray cluster.

    w2s plan gpu/alpaca2-70b-aligner13b-sft --nodes 4 --gpus-per-node 8 [--cpus-per-node 96] [key=value ...]

A private Ray cluster of N logical nodes with G GPUs each is started on this machine (one ``ray.init`` for one
node, ``ray.cluster_utils.Cluster`` for several; no GPU is needed, nothing is scheduled on them). For each role
the job uses, the placement groups the run would create (:func:`w2s.placement.role_layout`, the same function
the run uses) are created, read back (which node holds each actor's bundles) and removed. w2s runs one stage
at a time; its role services (:mod:`w2s.roles`) keep a role's actors for the run while they fit beside the next
role and otherwise stop the least recently used, so each role is placed alone on the empty cluster here: the
peak a run needs is the largest role. Roles named in ``cluster.colocate`` share one placement group of whole GPUs
for the whole run (:class:`w2s.placement.GpuPool`): it is placed first and kept while the other roles are placed
beside it, and the plan shows which rank of which role sits on each GPU. With RLHF the PPO stage's colocated
placement group (OpenRLHF's ``colocate_all``: one bundle of 1 GPU + 1 CPU per trainer GPU, PACK) is placed alone:
the run gives every role's GPUs back before PPO.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from w2s.errors import ClusterError
from w2s.placement import gpu_pool

ROLES = ("generator", "corrector", "trainer", "judge")
PLAN_WAIT_S = 15.0  # on an empty logical cluster a placement group is placed at once, or never
OBJECT_STORE_BYTES = 150 * 1024 * 1024  # nothing is stored: the smallest comfortable store per node
# No actor is started, so Ray's prestarted workers (one per logical CPU) would only cost time and memory.
_RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_prestart_worker_first_driver": "0",
            "RAY_enable_worker_prestart": "0"}


@dataclass
class RolePlan:
    """One role's placement: its layout, the node of each actor's bundles, and what did not fit."""

    role: str
    stages: str
    layout: Any  # w2s.placement.RoleLayout
    strategy: str
    actor_nodes: list[list[str]] = field(default_factory=list)  # node labels of each actor's bundles
    problem: str = ""

    @property
    def fits(self) -> bool:
        return not self.problem

    def per_node(self) -> dict[str, int]:
        """Actors per node (an actor counted on the node of its first bundle)."""
        counts: dict[str, int] = {}
        for nodes in self.actor_nodes:
            counts[nodes[0]] = counts.get(nodes[0], 0) + 1
        return counts


@dataclass
class Plan:
    recipe: str
    nodes: int
    gpus_per_node: int
    cpus_per_node: int  # logical CPUs each node got
    cpus_checked: bool
    job: str
    roles: list[RolePlan] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pool: Any = None  # w2s.placement.GpuPool of cluster.colocate, as the run places it
    pool_nodes: list[str] = field(default_factory=list)  # node label of each shared GPU
    pool_problem: str = ""

    @property
    def ok(self) -> bool:
        return all(r.fits for r in self.roles) and not self.pool_problem

    def role(self, name: str) -> RolePlan:
        return next(r for r in self.roles if r.role == name)

    def render(self) -> str:
        return render(self)


# ----------------------------------------------------------------------------------------------- what runs
def job_roles(cfg: Any) -> dict[str, str]:
    """The roles ``cfg.job`` starts, each with the stages it serves (in the order they run)."""
    job = str(cfg.job)
    if job == "aligner":
        return {"trainer": "aligner training"}
    if job == "popalign":
        p = cfg.popalign
        roles = {"generator": "popalign generate"}
        if "aligner" in list(p.strategies):
            roles["corrector"] = "popalign aligner contrast"
        if bool(p.judge.enabled):
            roles["judge"] = "popalign contrast check"
        if bool(p.train_dpo):
            roles["trainer"] = "dpo"
        return roles
    evals = bool(cfg.eval.enabled)
    trainer = [f"train ({cfg.train.method})"]
    if bool(cfg.aligner.train.enabled):
        trainer.insert(0, "aligner training")
    roles = {"generator": "generate" + (", eval" if evals else ""), "corrector": "correct",
             "trainer": ", ".join(trainer)}
    if evals:
        roles["judge"] = "eval"
    return roles


def ppo_role(cfg: Any) -> SimpleNamespace | None:
    """OpenRLHF's colocated PPO placement group as a role (None without PPO or when not colocated)."""
    if str(cfg.job) != "loop" or str(cfg.train.method) != "rlhf" or not bool(cfg.train.rlhf.ppo_enabled):
        return None
    if not bool(cfg.train.rlhf.ppo.colocate_all):
        return None
    # As the loop lays PPO out: the trainer role's GPUs as whole nodes, one {GPU 1, CPU 1} bundle per GPU.
    total = int(cfg.cluster.trainer.num_actors * cfg.cluster.trainer.num_gpus_per_actor)
    return SimpleNamespace(num_actors=total, num_cpus_per_actor=1.0, num_gpus_per_actor=1.0) if total else None


# ----------------------------------------------------------------------------------------------- logical Ray
@contextlib.contextmanager
def logical_cluster(nodes: int, gpus_per_node: int, cpus_per_node: int) -> Iterator[list[str]]:
    """A private Ray cluster of ``nodes`` logical nodes on this machine; yields the node ids (head first).

    Raises:
        ClusterError: this process is already connected to Ray, or the nodes did not come up.
    """
    import ray

    if ray.is_initialized():
        raise ClusterError("w2s plan starts a Ray cluster of its own, but this process is already connected to "
                           "Ray. Fix: run it in a fresh process (the `w2s plan` command).")
    saved = {k: os.environ.get(k) for k in _RAY_ENV}
    os.environ.update(_RAY_ENV)
    try:
        from ray._common.utils import get_ray_address_file

        address_file: str | None = get_ray_address_file(None)
    except (ImportError, AttributeError):  # Ray moved its private helper: nothing to restore then
        address_file = None
    before = _read(address_file) if address_file else None
    cluster = None
    ray_log = logging.getLogger("ray")
    level = ray_log.level
    ray_log.setLevel(logging.WARNING)  # Ray's start-up chatter would bury the table
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if nodes == 1:
                ray.init(address="local", num_cpus=cpus_per_node, num_gpus=gpus_per_node, include_dashboard=False,
                         object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False, configure_logging=False)
            else:
                from ray.cluster_utils import Cluster

                args = {"num_cpus": cpus_per_node, "num_gpus": gpus_per_node,
                        "object_store_memory": OBJECT_STORE_BYTES}
                cluster = Cluster(initialize_head=True, head_node_args={**args, "include_dashboard": False})
                for _ in range(nodes - 1):
                    cluster.add_node(wait=False, **args)
                ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
                cluster.wait_for_nodes(timeout=120)
        alive = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        if len(alive) != nodes:
            raise ClusterError(f"the logical Ray cluster has {len(alive)} node(s) up instead of {nodes}")
        yield alive
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        if address_file:  # ray.init and the cluster's head point the host's bare ray.init here
            _restore(address_file, before)
        ray_log.setLevel(level)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _restore(path: str, text: str | None) -> None:
    with contextlib.suppress(OSError):
        if text is None:
            os.remove(path)
        else:
            with open(path, "w") as f:
                f.write(text)


# ----------------------------------------------------------------------------------------------- placing
def place(role: str, stages: str, role_cfg: Any, strategy: str, labels: dict[str, str], key: str = "",
          pool: Any = None, pool_nodes: list[str] | None = None) -> RolePlan:
    """Place one role on the connected cluster, read where its bundles went, then remove them (a colocated role:
    its seats in the placed ``pool``, whose GPUs are on ``pool_nodes``)."""
    import ray

    from w2s.placement import place_role, remove_placement_groups, role_layout

    try:
        layout = role_layout(role, role_cfg, strategy, key=key, pool=pool)
    except ClusterError as e:
        return RolePlan(role, stages, None, strategy, problem=str(e))
    plan = RolePlan(role, stages, layout, strategy)
    if layout.pool is not None:
        if not pool_nodes:
            plan.problem = "its shared GPUs could not be placed (see colocated roles)"
        else:
            plan.actor_nodes = [[pool_nodes[b] for b in slot.bundles] for slot in layout.slots]
        return plan
    try:
        pgs = place_role(layout, strategy, timeout_s=PLAN_WAIT_S)
    except ClusterError as e:
        plan.problem = str(e)
        return plan
    try:
        tables = [ray.util.placement_group_table(pg)["bundles_to_node_id"] for pg in pgs]
        for slot in layout.slots:
            plan.actor_nodes.append([labels.get(tables[slot.group][b], "?") for b in slot.bundles])
    finally:
        remove_placement_groups(pgs)
    split = [i for i, nodes in enumerate(plan.actor_nodes) if len(set(nodes)) > 1]
    if layout.tensor_parallel and split:
        plan.problem = (f"{role} actor(s) {split} have their {layout.tensor_parallel} GPUs on several nodes "
                        f"({plan.actor_nodes[split[0]]}); tensor parallelism needs them on one node")
    return plan


def make_plan(cfg: Any, *, nodes: int, gpus_per_node: int, cpus_per_node: int = 0, recipe: str = "",
              node_ids: list[str] | None = None) -> Plan:
    """Place every role of ``cfg`` on ``nodes`` x ``gpus_per_node`` logical GPUs (see the module docstring).

    ``node_ids``: the nodes of a :func:`logical_cluster` of that shape this process is already connected to
    (several plans on one cluster); None starts and stops one for this plan.

    Raises:
        ClusterError: the request is malformed, or the logical cluster could not be started.
    """
    if nodes < 1 or gpus_per_node < 0 or cpus_per_node < 0:
        raise ClusterError(f"--nodes {nodes}, --gpus-per-node {gpus_per_node}, --cpus-per-node {cpus_per_node}: "
                           "need at least one node and no negative counts")
    used = job_roles(cfg)
    c = cfg.cluster
    strategy = str(c.placement_strategy)
    todo: list[tuple[str, str, Any, str, str]] = [(r, used[r], c[r], strategy, "") for r in ROLES if r in used]
    ppo = ppo_role(cfg)
    if ppo is not None:  # PPO runs on the trainer role's GPUs
        todo.append(("ppo", "train (rlhf): OpenRLHF PPO, colocated", ppo, "PACK", "cluster.trainer"))
    checked = cpus_per_node > 0
    pool = gpu_pool(cfg.cluster)  # as the run places it: a seat for every colocated role, started or not
    if not checked:  # enough CPUs that they never decide anything
        cpus_per_node = max([math.ceil(float(rc.num_actors) * float(rc.num_cpus_per_actor)) for _, _, rc, _, _ in todo]
                            + [1]) + 1 + (math.ceil(pool.total_cpus) if pool else 0)
    plan = Plan(recipe, nodes, gpus_per_node, cpus_per_node, checked, str(cfg.job),
                unused=[r for r in ROLES if r not in used])
    if ppo is not None and int(c.gpus_per_node) != gpus_per_node:
        plan.notes.append(f"cluster.gpus_per_node={c.gpus_per_node} but the plan has {gpus_per_node} GPUs per node: "
                          "PPO refuses to start when they differ")
    with contextlib.nullcontext(node_ids) if node_ids else logical_cluster(nodes, gpus_per_node, cpus_per_node) as ids:
        labels = {nid: f"node{i + 1}" for i, nid in enumerate(ids)}
        with _placed_pool(pool, labels, plan):
            for role, stages, role_cfg, strat, key in todo:
                if role == "ppo":
                    continue
                plan.roles.append(place(role, stages, role_cfg, strat, labels, key, pool=pool,
                                        pool_nodes=plan.pool_nodes))
        for role, stages, role_cfg, strat, key in todo:  # PPO runs with every role's GPUs given back
            if role == "ppo":
                plan.roles.append(place(role, stages, role_cfg, strat, labels, key))
    return plan


@contextlib.contextmanager
def _placed_pool(pool: Any, labels: dict[str, str], plan: Plan) -> Iterator[None]:
    """The pool placed for real while the roles are (its GPUs' nodes in ``plan.pool_nodes``), removed after."""
    from w2s.placement import place_pool, pool_nodes, remove_placement_groups

    plan.pool = pool
    if pool is None:
        yield
        return
    try:
        pg = place_pool(pool, timeout_s=PLAN_WAIT_S)
    except ClusterError as e:
        plan.pool_problem = str(e)
        yield
        return
    try:
        plan.pool_nodes = [labels.get(n, "?") for n in pool_nodes(pg)]
        yield
    finally:
        remove_placement_groups([pg])


# ----------------------------------------------------------------------------------------------- output
def _bundles(r: RolePlan) -> str:
    lay = r.layout
    if lay is None:
        return "-"
    if lay.pool is not None:
        return f"{lay.tensor_parallel or 1} shared GPU(s), the colocated group"
    if lay.tensor_parallel:
        return f"{lay.tensor_parallel} x 1 GPU, own group, STRICT_PACK"
    return f"1 of one group, {r.strategy}"


def _res(gpus: float, cpus: float) -> str:
    return f"{gpus:g} GPU, {cpus:g} CPU"


def render(plan: Plan) -> str:
    head = f"{plan.recipe or 'recipe'} (job {plan.job}) on {plan.nodes} node(s) x {plan.gpus_per_node} GPU(s)"
    cpus = f"{plan.cpus_per_node} CPUs per node" if plan.cpus_checked else \
        f"CPUs not checked (no --cpus-per-node; each node got {plan.cpus_per_node} logical CPUs)"
    lines = [f"{head}, {cpus}",
             ("Colocated roles share one group of GPUs for the whole run and take turns in their memory; the other "
              "roles are placed beside it." if plan.pool else
              "Stages run one at a time and each starts its own role actors, so every role is placed alone on the "
              "empty cluster."), ""]
    cols = ["ROLE", "STAGES", "ACTORS", "PER ACTOR", "BUNDLES PER ACTOR", "ROLE TOTAL", "ACTORS PER NODE", "FITS"]
    rows = []
    for r in plan.roles:
        lay = r.layout
        n = len(lay.slots) if lay else 0
        per_actor = "-" if lay is None else _res(
            # A colocated actor sits on its GPU(s) with the other roles' ranks and takes a share of each.
            lay.pool.share * (lay.tensor_parallel or 1) if lay.pool is not None else lay.gpus_per_actor,
            lay.cpus_per_actor)
        total = _res(lay.total("GPU"), lay.total("CPU")) if lay else "-"
        where = " ".join(f"{k}:{v}" for k, v in sorted(r.per_node().items())) or "-"
        if lay and lay.tensor_parallel and r.fits:
            where += " (each on one node)"
        rows.append([r.role, r.stages, str(n), per_actor, _bundles(r), total, where, "yes" if r.fits else "NO"])
    widths = [max(len(x) for x in col) for col in zip(cols, *rows)]
    for row in [cols, *rows]:
        lines.append("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip())
    lines.append("")
    if plan.pool is not None:
        lines += _shared_gpus(plan) + [""]
    # Colocated roles hold their shared GPUs for the whole run; the others are placed one at a time beside them.
    placed = [r for r in plan.roles if r.layout is not None and r.layout.pool is None
              and not (plan.pool and r.role == "ppo")]  # PPO runs after the roles gave their GPUs back
    of_cpus = f" of {plan.nodes * plan.cpus_per_node}" if plan.cpus_checked else ""
    if plan.pool is not None:
        pool_cpus = plan.pool.total_cpus
        lines.append(f"held for the whole run: {len(plan.pool.bundles)} of {plan.nodes * plan.gpus_per_node} GPUs "
                     f"and {pool_cpus:g}{of_cpus} CPUs, shared by the colocated roles")
    if placed:
        gpu_peak = max(r.layout.total("GPU") for r in placed)
        cpu_peak = max(r.layout.total("CPU") for r in placed)
        by = lambda res, peak: ", ".join(r.role for r in placed if r.layout.total(res) == peak)  # noqa: E731
        lines.append(f"peak{' beside them' if plan.pool else ''}: {gpu_peak:g} of {plan.nodes * plan.gpus_per_node} "
                     f"GPUs ({by('GPU', gpu_peak)}); {cpu_peak:g}{of_cpus} CPUs ({by('CPU', cpu_peak)})")
    if plan.unused:
        lines.append(f"not started by job {plan.job}: {', '.join(plan.unused)}")
    lines += [f"note: {n}" for n in plan.notes]
    if plan.ok:
        lines.append("fits: every role can be placed")
    else:
        lines.append("does not fit:")
        lines += [f"  - colocated roles: {plan.pool_problem}"] if plan.pool_problem else []
        lines += [f"  - {r.role}: {r.problem}" for r in plan.roles if not r.fits]
    return "\n".join(lines)


def _shared_gpus(plan: Plan) -> list[str]:
    """One row per shared GPU: its node and the rank of each colocated role sitting there."""
    pool = plan.pool
    share = f"{pool.share:.2f}".rstrip("0").rstrip(".")
    head = (f"shared GPUs (cluster.colocate): {len(pool.bundles)}, each role's actor taking {share} of a GPU "
            f"and turns in its memory")
    cols = ["GPU", "NODE", *[r.upper() for r in pool.roles], "CPUS"]
    seats: dict[str, dict[int, str]] = {r: {} for r in pool.roles}
    for r in plan.roles:
        if r.layout is not None and r.layout.pool is not None:
            for rank, slot in enumerate(r.layout.slots):
                for j, b in enumerate(slot.bundles):
                    seats[r.role][b] = f"rank {rank}" + (f" (tp {j})" if len(slot.bundles) > 1 else "")
    rows = [[str(b), plan.pool_nodes[b] if plan.pool_nodes else "-", *[seats[r].get(b, "-") for r in pool.roles],
             f"{bundle.get('CPU', 0.0):g}"] for b, bundle in enumerate(pool.bundles)]
    widths = [max(len(x) for x in col) for col in zip(cols, *rows)]
    return [head] + ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [cols, *rows]]


# ----------------------------------------------------------------------------------------------- command
def cmd_plan(args: argparse.Namespace) -> int:
    from w2s.config.compose import find_recipe, load_config

    recipe = find_recipe(args.recipe)
    # As `w2s launch` loads a recipe: the run joins a cluster, so checks of a private local instance do not apply.
    cfg = load_config(recipe, [*args.overrides, "cluster.address=auto"])
    plan = make_plan(cfg, nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_node=args.cpus_per_node,
                     recipe=str(recipe))
    print(plan.render())
    return 0 if plan.ok else 1


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``w2s plan ...`` to the ``w2s`` command line."""
    help_text = "place every role of a recipe on N nodes x G GPUs (a logical Ray cluster) and print where it lands"
    p = subparsers.add_parser("plan", help=help_text, description=__doc__.split("\n\n")[0],
                              epilog="Exit status 1 when a role does not fit, with the arithmetic. Overrides come "
                                     "right after the recipe.")
    p.add_argument("recipe", help="recipe file, or a name under recipes/")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    p.add_argument("--nodes", type=int, required=True, help="nodes of the cluster")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node")
    p.add_argument("--cpus-per-node", type=int, default=0, help="CPUs per node (default: not checked)")
    p.set_defaults(func=cmd_plan)
    return p
