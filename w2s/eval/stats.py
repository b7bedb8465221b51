"""Statistics of a pairwise comparison: the paper's omega with a paired bootstrap CI, a sign test, ties,
position consistency, answer lengths and a per-category breakdown.

omega = (wins - losses) / (wins + losses + ties) x 100 (App. B.2, Eq. 5). Prompts a judge could not decide
(unparseable verdicts) are reported, not counted. The CI resamples prompts (the unit a new study would draw), so
both answers of a prompt move together: that is what "paired" means here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from w2s.eval.verdicts import LOSS, TIE, WIN

OUTCOME_VALUE = {WIN: 1, LOSS: -1, TIE: 0}  # a prompt's outcome as a number: omega is their mean x 100


def outcome_values(path: Path) -> dict[str, dict[str, int]]:
    """judge -> prompt id -> +1/0/-1 of a kept ``outcomes.jsonl`` (undecided prompts left out; none when absent)."""
    from w2s.data.files import read_jsonl

    out: dict[str, dict[str, int]] = {}
    for r in read_jsonl(path) if path.exists() else []:
        if r.get("outcome") in OUTCOME_VALUE:
            out.setdefault(r["judge"], {})[str(r["id"])] = OUTCOME_VALUE[r["outcome"]]
    return out


def omega(outcomes: Sequence[str]) -> float:
    """(wins - losses) / N x 100 over decided outcomes."""
    if not outcomes:
        return float("nan")
    return 100.0 * sum(OUTCOME_VALUE[o] for o in outcomes) / len(outcomes)


def bootstrap_ci(outcomes: Sequence[str], *, resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of omega, resampling prompts with replacement (seeded: the same CI every run)."""
    import numpy as np

    if not outcomes:
        return float("nan"), float("nan")
    values = np.array([OUTCOME_VALUE[o] for o in outcomes], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1) * 100.0
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


EXACT_UP_TO = 20_000  # decided prompts summed exactly in integers (a few hundredths of a second at the top)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test of wins against losses (ties dropped): the chance of a split at least this
    uneven if neither answer were better.

    The binomial tail is summed in integers and divided once (int / int is correctly rounded however large: no
    ``2.0 ** n``, which is no float past 1024 prompts); past ``EXACT_UP_TO`` decided prompts, in log space
    (``lgamma``, then log-sum-exp from the largest term)."""
    n = wins + losses
    k = min(wins, losses)
    if n == 0 or 2 * k == n:
        return 1.0
    if n <= EXACT_UP_TO:
        term = tail = 1  # C(n, 0), then C(n, i) from C(n, i - 1)
        for i in range(1, k + 1):
            term = term * (n - i + 1) // i
            tail += term
        return min(1.0, 2 * tail / 2 ** n)
    log_terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)]
    top = max(log_terms)
    log_tail = top + math.log(math.fsum(math.exp(t - top) for t in log_terms)) - n * math.log(2.0)
    return min(1.0, 2.0 * math.exp(log_tail))


@dataclass
class Summary:
    """One judge's verdict on candidate vs baseline over a prompt set."""

    judge: str
    dimension: str
    n: int                      # decided prompts: wins + losses + ties
    wins: int
    losses: int
    ties: int
    unparsed: int               # prompts without a usable verdict
    omega: float
    ci_low: float
    ci_high: float
    p_value: float
    position_consistency: float | None  # pairwise judges judged in both orders: share of pairs that agree
    mean_chars_candidate: float
    mean_chars_baseline: float
    mean_words_candidate: float
    mean_words_baseline: float
    by_category: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One line for the console."""
        pc = f", position-consistent {self.position_consistency:.0%}" if self.position_consistency is not None else ""
        un = f", {self.unparsed} undecided" if self.unparsed else ""
        if not self.n:
            return f"{self.judge} ({self.dimension}): no decided prompt{un} (is the judge writing verdicts?)"
        return (f"{self.judge} ({self.dimension}): omega {self.omega:+.1f}% [95% CI {self.ci_low:+.1f}, "
                f"{self.ci_high:+.1f}], {self.wins}W/{self.losses}L/{self.ties}T of {self.n}, p={self.p_value:.3g}"
                f"{pc}{un}")


def _counts(outcomes: Sequence[str], seed: int) -> dict[str, Any]:
    wins, losses = outcomes.count(WIN), outcomes.count(LOSS)
    low, high = bootstrap_ci(outcomes, seed=seed)
    return {"n": len(outcomes), "wins": wins, "losses": losses, "ties": outcomes.count(TIE),
            "omega": omega(outcomes), "ci_low": low, "ci_high": high, "p_value": sign_test(wins, losses)}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarize(judge: str, dimension: str, outcomes: Mapping[str, str | None], *, candidate: Mapping[str, str],
              baseline: Mapping[str, str], categories: Mapping[str, str] | None = None,
              consistency: Mapping[str, bool | None] | None = None, seed: int = 0) -> Summary:
    """Summary of per-prompt outcomes keyed by prompt id (None: undecided). Lengths are over every prompt."""
    decided = [o for o in outcomes.values() if o is not None]
    agreed = [c for c in (consistency or {}).values() if c is not None]
    by_category: dict[str, dict[str, Any]] = {}
    if categories:
        for cat in sorted({categories[i] for i in outcomes if categories.get(i)}):
            cat_outcomes = [o for i, o in outcomes.items() if categories.get(i) == cat and o is not None]
            by_category[cat] = _counts(cat_outcomes, seed)
    ids = list(outcomes)
    return Summary(
        judge=judge, dimension=dimension, unparsed=len(outcomes) - len(decided), **_counts(decided, seed),
        position_consistency=(sum(agreed) / len(agreed)) if agreed else None,
        mean_chars_candidate=_mean([len(candidate[i]) for i in ids]),
        mean_chars_baseline=_mean([len(baseline[i]) for i in ids]),
        mean_words_candidate=_mean([len(candidate[i].split()) for i in ids]),
        mean_words_baseline=_mean([len(baseline[i].split()) for i in ids]),
        by_category=by_category)


def agreement(per_judge: Mapping[str, Mapping[str, str | None]]) -> tuple[list[str], list[list[float | None]]]:
    """Share of prompts on which two judges give the same outcome (over prompts both decided); None when none."""
    names = list(per_judge)
    matrix: list[list[float | None]] = []
    for a in names:
        row: list[float | None] = []
        for b in names:
            both = [i for i, o in per_judge[a].items() if o is not None and per_judge[b].get(i) is not None]
            row.append(sum(per_judge[a][i] == per_judge[b][i] for i in both) / len(both) if both else None)
        matrix.append(row)
    return names, matrix
