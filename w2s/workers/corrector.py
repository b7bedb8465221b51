"""Correction actors: the weak Aligner rewriting (question, answer) pairs."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from w2s.aligner.correct import Correction
from w2s.cluster import RoleActorMixin


class CorrectorWorker(RoleActorMixin):
    def __init__(self, aligner_path: str, model_cfg: dict[str, Any], correct_cfg: dict[str, Any],
                 user_templates: dict[str, Any] | None = None):
        from w2s.aligner.correct import Corrector

        self.corrector = Corrector(aligner_path, OmegaConf.create(model_cfg), OmegaConf.create(correct_cfg),
                                   **({"user_templates": user_templates} if user_templates else {}))

    def correct(self, pairs: list[tuple[str, str]]) -> list[Correction]:
        """Correct (question, answer) pairs: the correction text and token counts of each."""
        return self.corrector.correct([q for q, _ in pairs], [a for _, a in pairs])

    def provenance(self) -> dict[str, Any]:
        return dict(getattr(self.corrector, "provenance", {}) or {})
