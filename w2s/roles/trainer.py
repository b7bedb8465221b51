"""The trainer role: ranks that join one torch.distributed world once and run every training of the run
(:mod:`w2s.workers.requests`: SFT, DPO, reward models, the Aligner) on OpenRLHF's trainers."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from w2s.cluster import wait_all
from w2s.config.plain import to_plain
from w2s.roles.groups import HeldGroup, RoleGroups
from w2s.workers.requests import CheckLoads, Training
from w2s.workers.trainer import TrainerWorker


def as_sent(request: Training, cfg: Any) -> Training:
    """``request`` as it goes to the ranks: its section a plain dict and, for a policy training, the strong model
    section's attention kernel and ``trust_remote_code`` (the Aligner's training reads ``model.aligner`` itself)."""
    model = cfg.model.strong
    policy = {"attn_implementation": str(model.attn_implementation),
              "trust_remote_code": bool(model.trust_remote_code)} if request.trains_policy else {}
    return dataclasses.replace(request, section=to_plain(request.section), **policy)


class TrainerService:
    def __init__(self, groups: RoleGroups):
        self.groups, self.cfg = groups, groups.cfg

    def train(self, request: Training) -> dict[str, Any]:
        """Run ``request`` on the trainer ranks; rank 0's result, with ``world_size``."""
        request = as_sent(request, self.cfg)
        h = self._ranks()
        t0 = time.perf_counter()
        result = h.group.call(TrainerWorker.train, request, what=f"trainer {type(request).__name__}")[0]
        # The optimizer's own time when the trainer measured it (model loading and DeepSpeed set-up are not work).
        self.groups.work_s += float(result.get("fit_seconds") or time.perf_counter() - t0)
        result.setdefault("world_size", len(h.group.actors))
        return result

    def check_loads(self, request: CheckLoads) -> int:
        """The rows of a training file OpenRLHF keeps, counted by the trainer ranks (each reads the file as its
        training will; a malformed row is a DataError naming it)."""
        return self._ranks().group.call(TrainerWorker.check_loads, request,
                                        what=f"trainer: check {request.kind} rows")[0]

    def _ranks(self) -> HeldGroup:
        """The trainer ranks (one torch.distributed world, joined once), started on first use."""
        return self.groups.use("trainer", "trainer", self._join)

    def _join(self) -> HeldGroup:
        h = self.groups.start("trainer", "trainer", TrainerWorker)
        g, c = h.group, self.cfg.cluster
        timeout, liveness = float(c.rpc_timeout_s), float(c.liveness_timeout_s)
        addr, port = wait_all([g.actors[0].actor.rendezvous.remote()], g.actors[:1], what="trainer rendezvous",
                              timeout_s=timeout, liveness_s=liveness)[0]
        wait_all([a.actor.join.remote(addr, port, a.rank, len(g.actors)) for a in g.actors], g.actors,
                 what="trainer join", timeout_s=timeout, liveness_s=liveness)
        return h
