"""The jobs a recipe can name (``job:``, what ``w2s run`` does with it), in one table: where each job's logic lives,
what it reads and checks before any actor starts, and its work on the run's role services in its run directory.

``interpret`` is the one job without a run of its own: ``w2s run`` runs its two halves in this process into
``RUN_DIR/interpret`` (:func:`w2s.interpret.cli.run_interpret`), as ``w2s interpret lat|control`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from w2s.console import say

if TYPE_CHECKING:
    from w2s.roles import Services
    from w2s.rundir import RunDir


@dataclass(frozen=True)
class Job:
    """One job: ``preflight(cfg)`` reads its inputs before Ray starts (bad rows fail there), ``work(cfg, rd,
    services, inputs)`` runs its stages."""

    name: str
    module: str  # where its stages live
    work: Callable[[DictConfig, RunDir, Services, Any], Any]
    preflight: Callable[[DictConfig], Any] | None = None


def _loop_preflight(cfg: DictConfig) -> Any:
    from w2s.controller.loop import preflight

    return preflight(cfg)


def _loop(cfg: DictConfig, rd: RunDir, services: Services, inputs: Any) -> Any:
    from w2s.controller.loop import Loop

    return Loop(cfg, rd, services).run(inputs)


def _aligner(cfg: DictConfig, rd: RunDir, services: Services, inputs: Any) -> Any:
    from w2s.controller.aligners import aligner_stage
    from w2s.controller.context import RunContext

    aligner, _ = aligner_stage(RunContext(cfg, rd, services), force=True)
    say(f"aligner: {aligner}")
    return aligner


def _popalign(cfg: DictConfig, rd: RunDir, services: Services, inputs: Any) -> Any:
    from w2s.popalign.pipeline import run_popalign

    return run_popalign(cfg, rd, services)


JOBS: dict[str, Job] = {job.name: job for job in (
    Job("loop", "w2s.controller.loop", _loop, _loop_preflight),
    Job("aligner", "w2s.controller.aligners", _aligner),
    Job("popalign", "w2s.popalign.pipeline", _popalign),
)}
