"""Correction actors: the weak Aligner rewriting (question, answer) pairs."""

from __future__ import annotations

from typing import Any

from w2s.aligner.correct import Correction
from w2s.cluster import RoleActorMixin
from w2s.workers import EngineTurns, typed
from w2s.workers.dispatch import Dispatch, register
from w2s.workers.requests import Correct


class CorrectorWorker(EngineTurns, RoleActorMixin):
    """Holds one Aligner; :meth:`load_aligner` swaps in another of the same architecture (each round's own Aligner)
    without restarting the engine."""

    def __init__(self, aligner_path: str, model_cfg: dict[str, Any], correct_cfg: dict[str, Any],
                 user_templates: dict[str, Any] | None = None, shares_gpu: bool = False):
        from w2s.aligner.correct import Corrector
        from w2s.config.schema import CorrectConfig, ModelConfig

        self.model_cfg, self.correct_cfg = typed(ModelConfig, model_cfg), typed(CorrectConfig, correct_cfg)
        self.templates = {"user_templates": user_templates} if user_templates else {}
        self.corrector = Corrector(aligner_path, self.model_cfg, self.correct_cfg, shares_gpu=shares_gpu,
                                   **self.templates)

    @register(Dispatch.ALL)
    def load_aligner(self, aligner_path: str) -> dict[str, Any]:
        """Take another Aligner's weights in place (its template and instruction are read from its metadata);
        ``loaded`` False (with the reason) when its architecture differs, and the caller starts a fresh actor."""
        from w2s.aligner.correct import Corrector
        from w2s.assets import resolve_model_path
        from w2s.generation.weights import architecture_change

        path = resolve_model_path(aligner_path)
        why = architecture_change(self.corrector.aligner_path, path)
        if why:
            return {"loaded": False, "why": why}
        answer = self._take_in_place(path)
        self.corrector = Corrector(path, self.model_cfg, self.correct_cfg, generator=self.corrector.generator,
                                   **self.templates)
        return answer

    def _engine(self) -> Any:
        return self.corrector.generator

    def _tolerance(self) -> float:
        return float(self.correct_cfg.refit_tolerance)

    @register(Dispatch.ROWS)
    def correct(self, request: Correct) -> list[Correction]:
        """Correct (question, answer) pairs: the correction text and token counts of each (``request.seed``: the
        sampling seed, default the correct section's)."""
        pairs = request.pairs
        return self.corrector.correct([q for q, _ in pairs], [a for _, a in pairs], seed=request.seed)

    @register(Dispatch.ALL)
    def provenance(self) -> dict[str, Any]:
        return dict(getattr(self.corrector, "provenance", {}) or {})

    @register(Dispatch.ALL)
    def close(self) -> None:
        self.corrector.close()
