"""The corrector role: the weak Aligner, kept for the whole run; another Aligner of the same base (each round's, with
``aligner.per_round``) is taken in place (the corrector's model slot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from w2s.config.plain import to_plain
from w2s.roles.groups import HeldGroup, ModelSlot, RoleGroups, slot_key, without_path
from w2s.workers.corrector import CorrectorWorker
from w2s.workers.interpreter import InterpreterWorker
from w2s.workers.requests import Correct


class CorrectorService:
    def __init__(self, groups: RoleGroups):
        self.groups, self.cfg = groups, groups.cfg

    def _templates(self) -> dict[str, Any] | None:
        return to_plain(self.cfg.aligner.templates) or None

    def hold(self, aligner: str) -> HeldGroup:
        """The corrector group holding ``aligner``, with its provenance (template, instruction) in ``info``."""
        cfg = self.cfg
        key = slot_key(role="corrector", lineage="aligner", model=without_path(cfg.model.aligner),
                       correct=to_plain(cfg.correct), templates=self._templates())
        slot = ModelSlot("corrector", key, CorrectorWorker.load_aligner, CorrectorWorker,
                         (to_plain(cfg.model.aligner), to_plain(cfg.correct), self._templates(),
                          self.groups.shares_gpu("corrector")))
        h = self.groups.hold(slot, aligner)
        if not h.info:
            h.info = h.group.call(CorrectorWorker.provenance)[0]
        return h

    def replaced_next(self) -> None:
        """Its Aligner is replaced before it corrects again (``aligner.per_round``, once the round's corrections are
        in): sharing its GPUs, it sleeps without keeping the weights (:meth:`RoleGroups.replaced_next`)."""
        self.groups.replaced_next("corrector", "aligner")

    def correct(self, aligner: str, pairs: list[tuple[str, str]], *, what: str, seed: int | None = None
                ) -> tuple[list[Any], dict[str, Any]]:
        """The Aligner's corrections of (question, answer) pairs, and its provenance (template, instruction).
        ``seed``: the sampling seed (default: the correct section's)."""
        h = self.hold(aligner)
        with self.groups.timed_work():
            outs = h.group.call(CorrectorWorker.correct, Correct(pairs=pairs, seed=seed), what=what)
        return outs, h.info

    # ``w2s interpret``'s model-bound work, in one corrector actor (the reading vectors come from every pair at once)
    # holding ``model_path`` with the correction settings ``correct_cfg``, kept while the same model is asked again.
    def lat(self, model_path: str, correct_cfg: Any, pairs: list[tuple[str, str]], cfg: Any) -> dict[str, Any]:
        """Stimuli, reading vectors and LAT scans (:meth:`InterpreterWorker.lat`); ``cfg``: the whole config."""
        return self._interpret(model_path, correct_cfg, InterpreterWorker.lat, pairs, to_plain(cfg))

    def control(self, model_path: str, correct_cfg: Any, pairs: list[tuple[str, str]], directions: dict[int, Any],
                alphas: list[float], seed: int) -> list[dict[str, Any]]:
        """Corrections steered at each alpha (:meth:`InterpreterWorker.control`)."""
        return self._interpret(model_path, correct_cfg, InterpreterWorker.control, pairs, directions, alphas, seed)

    def _interpret(self, model_path: str, correct_cfg: Any, method: Callable[..., Any], *args: Any) -> Any:
        groups = self.groups
        key = slot_key(role="corrector", purpose="interpret", path=model_path, correct=to_plain(correct_cfg))
        h = groups.use("corrector", key, lambda: groups.start(
            "corrector", key, InterpreterWorker, model_path, to_plain(self.cfg.model.aligner),
            to_plain(correct_cfg), self._templates(), groups.shares_gpu("corrector"), loaded=model_path, actors=1))
        with groups.timed_work():
            return h.group.call(method, *args, what=f"interpret {method.__name__}")[0]


class ServedCorrector:
    """The corrector service driven as an in-process :class:`w2s.aligner.correct.Corrector` is, by the one
    correction path (:class:`w2s.aligner.correction_file.CorrectionFile`): a round's correct stage, ``w2s aligner
    correct``, ``w2s eval --aligner``. The Aligner is held (loaded) when this is made.

    Args:
        service: the corrector service (its groups close it).
        aligner: the Aligner's path (checked in the driver first: :func:`w2s.aligner.correct.check_aligner`).
        what: the progress line's name for its calls.
    """

    def __init__(self, service: CorrectorService, aligner: str, *, what: str = "correct"):
        self.service, self.aligner_path, self.what = service, aligner, what
        self.provenance = dict(service.hold(aligner).info)

    @property
    def sampling(self) -> dict[str, Any]:
        from w2s.generation import resolve_sampling

        return resolve_sampling(self.service.cfg.correct)

    def correct(self, questions: list[str], answers: list[str], *, seed: int | None = None,
                progress: bool = False) -> list[Any]:
        return self.service.correct(self.aligner_path, list(zip(questions, answers, strict=True)), seed=seed,
                                    what=self.what)[0]

    def close(self) -> None:
        """Nothing here: the corrector is the service's (closed with it)."""
