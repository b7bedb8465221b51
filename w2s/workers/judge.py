"""Judge actors: score answers so the driver can count wins, losses and ties."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from w2s.cluster import RoleActorMixin


class JudgeWorker(RoleActorMixin):
    def __init__(self, judge_cfg: dict[str, Any]):
        from w2s.eval.judges import make_judge

        # Ray exposes the GPU this actor reserved (cluster.judge) through CUDA_VISIBLE_DEVICES: the judge runs there.
        self.judge = make_judge(OmegaConf.create(judge_cfg))

    def device(self) -> str:
        """Where the judge model runs (``cuda`` or ``cpu``)."""
        return self.judge.device

    def score(self, rows: list[tuple[str, str, str]]) -> list[float]:
        """Score (prompt, answer, reference) triples; higher is better."""
        return self.judge.score([p for p, _, _ in rows], [a for _, a, _ in rows], [r for _, _, r in rows])
