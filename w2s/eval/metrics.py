"""Pairwise comparison of two policies' answers, as in the Aligner paper (App. B.2, Eq. 5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from statistics import fmean


@dataclass(frozen=True)
class Comparison:
    wins: int
    losses: int
    ties: int
    total: int
    win_minus_loss: float   # (wins - losses) / total x 100, the paper's omega
    mean_score: float       # the candidate's mean judge score
    mean_score_baseline: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def compare(candidate: list[float], baseline: list[float], *, tie_margin: float = 0.0) -> Comparison:
    """Win/loss/tie of ``candidate`` over ``baseline``, prompt by prompt (scores: higher is better)."""
    if len(candidate) != len(baseline):
        raise ValueError(f"compare: {len(candidate)} candidate scores but {len(baseline)} baseline scores")
    if not candidate:
        raise ValueError("compare: no scores")
    wins = sum(c - b > tie_margin for c, b in zip(candidate, baseline))
    losses = sum(b - c > tie_margin for c, b in zip(candidate, baseline))
    total = len(candidate)
    return Comparison(wins=wins, losses=losses, ties=total - wins - losses, total=total,
                      win_minus_loss=100.0 * (wins - losses) / total, mean_score=fmean(candidate),
                      mean_score_baseline=fmean(baseline))
