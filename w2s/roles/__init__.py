"""The run's role services: the one layer that starts role actors, keeps them for the run and calls them.

The round loop, PopAlign and the evaluation stages ask a :class:`Services` for work (``generate``, ``correct``,
``train``, judges' ``score``/``complete``); none of them creates actors. Each role is a
:class:`w2s.cluster.RoleGroup` started on first use and kept until the run ends:

* the **generator** keeps its engine (vLLM or transformers) for the whole run; after a train stage it takes the
  new policy's weights in place (``load_weights``: the trainer's saved safetensors), and it is started afresh only
  when the new checkpoint is another architecture;
* the **corrector** keeps its Aligner, and takes another of the same base (each round's Aligner with
  ``aligner.per_round``) in place;
* the **trainer** ranks rendezvous and join their torch.distributed world once, then run every training;
* the **judges** keep their score or judge model.

Groups stay placed while they fit beside the next role; when a role cannot be placed next to them, the least
recently used idle groups are shut down to make room. Roles named in ``cluster.colocate`` share GPUs instead, as
OpenRLHF's hybrid engine does: one placement group of whole-GPU bundles (:class:`w2s.placement.GpuPool`), rank *i* of
every colocated role on GPU *i*, placed once and kept for the run. They take turns in GPU memory: before one group
works, every other colocated group sleeps (vLLM's sleep: weights to host memory, KV cache freed; transformers and
score models: weights to host memory; trainer ranks: the kept DPO reference leaves the GPU, each training's own
models being freed when it returns) and keeps its process, and it wakes up (each engine checks, after waking,
that it answers as it did before sleeping). A role with fewer GPUs than the pool may hold several groups side by
side (another model's generator); one more than fits takes the place of its least recently used group
(:mod:`w2s.roles.pool`). A restarted driver builds fresh services: nothing here outlives the run.

Commands outside a run (``w2s aligner correct``, ``w2s eval``, ``w2s interpret``, ``w2s bench``) use the same
services through :mod:`w2s.roles.on_demand`.

Every work call adds its wall time to :attr:`Services.work_s`; a stage's manifest records the share of its wall
time spent in work calls (``work_seconds``; for training, OpenRLHF's ``fit`` itself), the rest being start-up and
orchestration (``w2s bench loop`` prints both).
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

from w2s.cluster import RoleGroup, wait_all
from w2s.config.plain import to_plain
from w2s.console import say
from w2s.errors import ClusterError
from w2s.placement import fits_on_nodes, role_layout
from w2s.roles.pool import SharedGpus

# The sampling fields an engine is started with; the rest (temperature, lengths, ...) are per call.
ENGINE_FIELDS = ("backend", "tensor_parallel_size", "gpu_memory_utilization", "kv_cache_gib", "enforce_eager")


@dataclass
class Held:
    """One started role group and what it holds."""

    role: str
    key: str
    group: RoleGroup
    loaded: str = ""  # the model path its actors hold now
    last_used: float = field(default_factory=time.monotonic)
    asleep: bool = False  # colocated (Services.shares_gpu) and another group works now
    info: dict[str, Any] = field(default_factory=dict)  # engine or provenance, asked once

    @property
    def pooled(self) -> bool:
        """Colocated: its actors sit on the shared GPUs (cluster.colocate), which stopping it does not free."""
        return self.group.layout.pool is not None


def _key(**parts: Any) -> str:
    return json.dumps(parts, sort_keys=True, default=str)


def _without_path(model_cfg: Any) -> dict[str, Any]:
    return {k: v for k, v in (to_plain(model_cfg) or {}).items() if k != "path"}


def engine_sampling(*sections: Any) -> dict[str, Any]:
    """The sampling config an engine serving every one of ``sections`` starts with: the first section's, with
    the longest prompt and answer of all (vLLM fixes its context length when it starts)."""
    plain = [to_plain(s) for s in sections]
    out = dict(plain[0])
    for name in ("max_prompt_tokens", "max_new_tokens"):
        out[name] = max(int(p.get(name) or 0) for p in plain)
    return out


def _engine(sampling: Any) -> dict[str, Any]:
    s = to_plain(sampling)
    return {k: s.get(k) for k in ENGINE_FIELDS}


class Services:
    """The run's role actors (see the module docstring).

    Args:
        cfg: The whole config (``cluster`` for placement, ``model``/``correct``/``aligner.templates`` for the
            roles' models).
        on_placed: Called with every actor's placement record whenever a group starts (the run directory's
            ``cluster.json``).
    """

    def __init__(self, cfg: Any, *, on_placed: Callable[[list[dict[str, Any]]], None] | None = None):
        self.cfg, self.on_placed = cfg, on_placed
        self.held: dict[str, Held] = {}
        self.placements: list[dict[str, Any]] = []
        self.starts: Counter[str] = Counter()  # role -> groups started (a test and the bench read it)
        self.loads: Counter[str] = Counter()  # "role:path" -> times loaded (started or taken in place)
        self.turns: list[tuple[str, str]] = []  # (role, "sleep" | "wake_up") in order, for roles sharing GPUs
        self.refits: list[dict[str, Any]] = []  # each in-place load's refit check (role, path, what rank 0 measured)
        self.work_s = 0.0
        self.shared = SharedGpus(cfg.cluster)  # the GPUs colocated roles share, placed on first use

    # ------------------------------------------------------------------------------------------- groups
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

    def _evict(self, keep: str = "") -> bool:
        """Shut the least recently used group of its own placement down (not ``keep``: colocated groups free no
        resources, their GPUs stay the pool's); False when there is none."""
        idle = sorted((h for k, h in self.held.items() if k != keep and not h.pooled), key=lambda h: h.last_used)
        if not idle:
            return False
        h = idle[0]
        say(f"{h.role}: stopped to make room for the next role")
        self._stop(h.key)
        return True

    def _stop(self, key: str) -> None:
        h = self.held.pop(key)
        with contextlib.suppress(Exception):  # its close() frees the engine's processes; a dead actor has none
            h.group.call_all("close", what=f"{h.role}: close")
        h.group.shutdown()

    def shares_gpu(self, role: str) -> bool:
        """Whether ``role`` is colocated (``cluster.colocate``): its actors share GPUs with other roles' actors."""
        return self.shared.shares(role)

    def _take_turn(self, role: str, h: Held | None = None) -> None:
        """Before ``role`` works (or starts) on GPUs it shares: every other colocated group sleeps (another group
        of the same role too: it sits on GPUs that this one's ranks may share with other roles), ``h`` wakes."""
        if not self.shares_gpu(role):
            return
        for other in self.held.values():
            if other is not h and not other.asleep and other.pooled:
                freed = other.group.call_all("sleep", what=f"{other.role}: sleep")
                other.asleep = True
                self.turns.append((other.role, "sleep"))
                say(f"{other.role}: asleep while {role} works" + (" (GPU memory freed)" if any(freed) else ""))
        if h is not None and h.asleep:
            h.group.call_all("wake_up", what=f"{role}: wake up")  # each engine checks it answers as before
            h.asleep = False
            self.turns.append((role, "wake_up"))

    def _start(self, role: str, key: str, cls: type, *args: Any, loaded: str = "", actors: int = 0) -> Held:
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
        self.held[key] = Held(role, key, group, loaded)
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

    def _use(self, role: str, key: str, start: Callable[[], Held]) -> Held:
        """The group of ``key``, started when there is none; its turn taken when it shares GPUs."""
        h = self.held.get(key)
        if h is None:
            h = start()
        else:
            self._take_turn(role, h)
        h.last_used = time.monotonic()
        return h

    def _model(self, role: str, key: str, path: str, swap: str, cls: type, *args: Any) -> Held:
        """The group of ``key`` holding ``path``: kept, given ``path``'s weights in place (``swap``), or
        started (afresh when the checkpoint does not fit the loaded model)."""
        from w2s.assets import resolve_model_path

        given, path = path, resolve_model_path(path, progress=say)
        h = self.held.get(key)
        if h is not None:
            self._take_turn(role, h)
        if h is not None and h.loaded != path:
            answers = h.group.call_all(swap, path, what=f"{role}: {swap}")
            if all(a["loaded"] for a in answers):
                refit = answers[0]["refit"]
                self.refits.append({"role": role, "path": given, **refit})
                check = (f"refit check: mean |d log p| {max(a['refit']['mean_abs_diff'] for a in answers):.2g} "
                         f"<= {refit['tolerance']:g}" if refit["checked"] else f"refit not checked: {refit['why']}")
                say(f"{role}: took {path} in place ({max(a['seconds'] for a in answers):.1f} s; {check})")
                self.loads[f"{role}:{given}"] += 1
                h.loaded, h.info = path, {}
            else:
                say(f"{role}: {path} does not fit the loaded model ({answers[0]['why']}): starting afresh")
                self._stop(key)
                h = None
        if h is None:
            h = self._start(role, key, cls, path, *args, loaded=path)
            self.loads[f"{role}:{given}"] += 1
        h.last_used = time.monotonic()
        return h

    @contextlib.contextmanager
    def _work(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.work_s += time.perf_counter() - t0

    # ------------------------------------------------------------------------------------------- generator
    def generator(self, model_path: str, model_cfg: Any, sampling: Any, *, lineage: str = "policy") -> Held:
        """The generator group holding ``model_path``. ``lineage``: models that replace one another in place
        (the round loop's policy); another lineage gets its own engine. ``sampling``: the engine's settings."""
        from w2s.workers.generator import GeneratorWorker

        key = _key(role="generator", lineage=lineage, model=_without_path(model_cfg), engine=_engine(sampling))
        return self._model("generator", key, model_path, "load_weights", GeneratorWorker, to_plain(model_cfg),
                           to_plain(sampling), self.shares_gpu("generator"))

    def generate(self, model_path: str, prompts: list[str], sampling: Any, seed: int, *,
                 what: str) -> tuple[list[Any], dict[str, str]]:
        """The policy ``model_path``'s answers to user prompts (``sampling``: this call's decoding), and the engine
        that served them. The round loop's answers (``generate``) and evaluation answers (``eval.generate``)
        share one engine when their engine settings agree."""
        h = self.generator(model_path, self.cfg.model.strong, self._policy_engine(sampling))
        with self._work():
            outs = h.group.map_shards("generate", prompts, seed, to_plain(sampling), what=what)
        if not h.info:
            h.info = h.group.call_all("engine")[0]
        return outs, h.info

    def _policy_engine(self, sampling: Any) -> Any:
        cfg = self.cfg
        shared = [cfg.generate] + ([cfg.eval.generate] if "eval" in cfg and cfg.eval.enabled else [])
        if all(_engine(s) == _engine(sampling) for s in shared):
            return engine_sampling(*shared)
        return sampling

    def sample_chat(self, model_path: str, model_cfg: Any, requests: list[tuple[list[dict], int]], sampling: Any, *,
                    what: str) -> tuple[list[str], list[Any]]:
        """Whole conversations answered by ``model_path`` (its own engine), each with its seed: the rendered
        prompts and the generations."""
        h = self.generator(model_path, model_cfg, sampling, lineage=f"model:{model_path}")
        with self._work():
            rendered = h.group.map_shards("render_conversations", [c for c, _ in requests], what=what)
            outs = h.group.map_shards("sample_chat", requests, to_plain(sampling), what=what)
        return rendered, outs

    # ------------------------------------------------------------------------------------------- corrector
    def corrector(self, aligner: str) -> Held:
        """The corrector group holding ``aligner``, with its provenance (template, instruction) in ``info``."""
        from w2s.workers.corrector import CorrectorWorker

        cfg = self.cfg
        templates = to_plain(cfg.aligner.templates) or None
        key = _key(role="corrector", model=_without_path(cfg.model.aligner), correct=to_plain(cfg.correct),
                   templates=templates)
        h = self._model("corrector", key, aligner, "load_aligner", CorrectorWorker, to_plain(cfg.model.aligner),
                        to_plain(cfg.correct), templates, self.shares_gpu("corrector"))
        if not h.info:
            h.info = h.group.call_all("provenance")[0]
        return h

    def correct(self, aligner: str, pairs: list[tuple[str, str]], *, what: str, seed: int | None = None
                ) -> tuple[list[Any], dict[str, Any]]:
        """The Aligner's corrections of (question, answer) pairs, and its provenance (template, instruction).
        ``seed``: the sampling seed (default: the correct section's)."""
        h = self.corrector(aligner)
        with self._work():
            outs = h.group.map_shards("correct", pairs, seed, what=what)
        return outs, h.info

    def interpret(self, model_path: str, correct_cfg: Any, method: str, *args: Any) -> Any:
        """``w2s interpret``'s model-bound work (:class:`w2s.workers.interpreter.InterpreterWorker`'s ``lat`` or
        ``control``) on ``model_path`` with the correction settings ``correct_cfg``: one corrector actor (the
        reading vectors come from every pair at once), kept while the same model is asked again."""
        from w2s.workers.interpreter import InterpreterWorker

        cfg = self.cfg
        templates = to_plain(cfg.aligner.templates) or None
        key = _key(role="corrector", purpose="interpret", path=model_path, correct=to_plain(correct_cfg))
        h = self._use("corrector", key, lambda: self._start(
            "corrector", key, InterpreterWorker, model_path, to_plain(cfg.model.aligner), to_plain(correct_cfg),
            templates, self.shares_gpu("corrector"), loaded=model_path, actors=1))
        with self._work():
            return h.group.call_all(method, *args, what=f"interpret {method}")[0]

    # ------------------------------------------------------------------------------------------- trainer
    def train(self, function: str, section: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run a training function on the trainer ranks (one torch.distributed world, joined once); rank 0's
        result, with ``world_size``. See :class:`w2s.workers.trainer.TrainerWorker` for the functions."""
        from w2s.workers.trainer import model_kwargs

        h = self._trainers()
        kwargs = {**model_kwargs(self.cfg, function), **kwargs}
        t0 = time.perf_counter()
        result = h.group.call_all("run", function, to_plain(section), *args, what=f"trainer {function}", **kwargs)[0]
        # The optimizer's own time when the trainer measured it (model loading and DeepSpeed set-up are not work).
        self.work_s += float(result.get("fit_seconds") or time.perf_counter() - t0)
        result.setdefault("world_size", len(h.group.actors))
        return result

    def check_loads(self, data_path: str, tokenizer_path: str, kind: str, *, chat: bool, max_len: int,
                    trust_remote_code: bool) -> int:
        """The rows of a training file OpenRLHF keeps, counted by the trainer ranks (each reads the file as its
        training will; a malformed row is a DataError naming it)."""
        return self._trainers().group.call_all("check_loads", data_path, tokenizer_path, kind, chat=chat,
                                               max_len=max_len, trust_remote_code=trust_remote_code,
                                               what=f"trainer: check {kind} rows")[0]

    def _trainers(self) -> Held:
        """The trainer ranks (one torch.distributed world, joined once), started on first use."""
        from w2s.workers.trainer import TrainerWorker

        return self._use("trainer", "trainer", lambda: self._join_trainers(TrainerWorker))

    def _join_trainers(self, cls: type) -> Held:
        h = self._start("trainer", "trainer", cls)
        g, c = h.group, self.cfg.cluster
        timeout, liveness = float(c.rpc_timeout_s), float(c.liveness_timeout_s)
        addr, port = wait_all([g.actors[0].actor.rendezvous.remote()], g.actors[:1], what="trainer rendezvous",
                              timeout_s=timeout, liveness_s=liveness)[0]
        wait_all([a.actor.join.remote(addr, port, a.rank, len(g.actors)) for a in g.actors], g.actors,
                 what="trainer join", timeout_s=timeout, liveness_s=liveness)
        return h

    # ------------------------------------------------------------------------------------------- judges
    @contextlib.contextmanager
    def judge(self, name: str, judge_cfg: Any) -> Iterator[Any]:
        """The judge group holding ``judge_cfg``'s model (as :mod:`w2s.eval.panel`'s ``open_workers`` wants it:
        a context manager; the group outlives it)."""
        from w2s.workers.judge import JudgeWorker

        plain = to_plain(judge_cfg)
        key = _key(role="judge", judge=plain)

        def start() -> Held:
            say(f"judge {name}: {plain.get('kind')}")
            return self._start("judge", key, JudgeWorker, plain)

        h = self._use("judge", key, start)
        with self._work():
            yield h.group

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
                   for m in h.group.call_all("memory", what=f"{role}: memory"))

    def close(self) -> None:
        """Stop every group (their engines' processes too) and give the colocated roles' GPUs back."""
        for key in list(self.held):
            self._stop(key)
        self.shared.release()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
