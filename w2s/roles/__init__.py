"""The run's role services: the one layer that starts role actors, keeps them for the run and calls them.

The round loop, PopAlign, the evaluation stages and the commands outside a run ask a :class:`Services` for work;
none of them creates actors. One module per concern:

=====================  ==================================================================================
``groups``             placement, eviction, turns on shared GPUs, model slots (when new weights replace a
                       model in place), work timing: :class:`~w2s.roles.groups.RoleGroups`
``pool``               the GPUs colocated roles share (``cluster.colocate``)
``generator``          the strong policy's engine: ``services.generator.generate(...)``
``corrector``          the weak Aligner: ``services.corrector.correct(...)``, ``w2s interpret``'s model work
``trainer``            the trainer ranks: ``services.trainer.train(TrainDPO(...))``
``judge``              score models and local judges: ``with services.judges.open(name, cfg) as judge``
``on_demand``          the services for a command outside a run (``w2s aligner correct``, ``w2s eval``, ...)
=====================  ==================================================================================

Each call carries a typed request (:mod:`w2s.workers.requests`) to a worker method that declares how it is spread
over the ranks (:mod:`w2s.workers.dispatch`): no method name travels as a string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from w2s.roles.corrector import CorrectorService
from w2s.roles.generator import GeneratorService
from w2s.roles.groups import RoleGroups
from w2s.roles.judge import JudgeService
from w2s.roles.trainer import TrainerService


class Services(RoleGroups):
    """The run's role groups (:class:`~w2s.roles.groups.RoleGroups`) and a service per role on them.

    Args:
        cfg: The whole config (``cluster`` for placement, ``model``/``correct``/``aligner.templates`` for the
            roles' models).
        on_placed: Called with every actor's placement record whenever a group starts (the run directory's
            ``cluster.json``).
    """

    def __init__(self, cfg: Any, *, on_placed: Callable[[list[dict[str, Any]]], None] | None = None):
        super().__init__(cfg, on_placed=on_placed)
        self.generator = GeneratorService(self)
        self.corrector = CorrectorService(self)
        self.trainer = TrainerService(self)
        self.judges = JudgeService(self)

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
