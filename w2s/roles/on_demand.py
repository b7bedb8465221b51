"""The role services for a command outside a run (``w2s aligner correct``, ``w2s eval``, ``w2s interpret``,
``w2s bench``): Ray and the services started on first use, retried as a run's stages are, and the corrector driven
as an in-process Aligner would be."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from w2s.config.plain import to_plain
from w2s.console import say
from w2s.errors import WorkerError
from w2s.roles import Services
from w2s.roles.corrector import ServedCorrector

T = TypeVar("T")


class ServicesOnDemand:
    """Ray and the role services for a command outside a run (``w2s aligner correct``, ``w2s eval``), started on
    first use, so that bad input is reported before any actor starts, and closed with ``stack``. Actors write their
    logs to ``logs`` (the command's output folder), as a run's do to ``RUN_DIR/logs``."""

    def __init__(self, stack: contextlib.ExitStack, cfg: Any, logs: Any):
        self.stack, self.cfg, self.logs = stack, cfg, str(logs)
        self.services: Services | None = None

    def __call__(self) -> Services:
        from w2s.cluster import RayCluster

        if self.services is None:
            self.stack.enter_context(RayCluster(self.cfg.cluster, actor_logs=self.logs,
                                                log_level=str(self.cfg.log.level)))
            self.services = self.stack.enter_context(Services(self.cfg))
        return self.services

    def corrector(self, aligner: str) -> ServedCorrector:
        """``aligner`` checked in this process (:func:`w2s.aligner.correct.check_aligner`), then served."""
        from w2s.aligner.correct import check_aligner

        c = self.cfg
        path = check_aligner(aligner, c.model.aligner, c.correct, to_plain(c.aligner.templates) or None)
        return ServedCorrector(self().corrector, path)

    def retrying(self, what: str, work: Callable[[], T]) -> T:
        """``work()``, run again up to ``run.max_retries`` times on restarted services when an actor died or hung
        (:class:`~w2s.errors.WorkerError`), as a run's stages are. The commands' work resumes from what it wrote
        (corrections row by row, answers and judgements from their caches), so a retry loses at most the batch in
        flight."""
        retries = int(self.cfg.run.max_retries)
        for attempt in range(retries + 1):
            try:
                return work()
            except WorkerError as e:
                if attempt == retries or self.services is None:
                    raise
                say(f"{what} failed ({e}); retry {attempt + 1}/{retries} (run.max_retries) on restarted services")
                self.services.close()
        raise AssertionError("unreachable")
