"""Representation control (App. B.6): generate with alpha x V_c added to the residual stream, and measure how far
the corrections move from the original answers.

D_L(a, c) = Levenshtein(T(a), T(c)) / |T(a)|, over tokens of the model's tokenizer (so it can exceed 1); its mean
over the pairs, and the copy rate (corrections equal to the answer), at each alpha, with a least-squares line and
its R^2 (the paper reports about 0.93 for Aligner-7B).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from w2s.interpret.residual import ResidualSteer


def token_levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    """Edit distance between two token sequences (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def levenshtein_ratio(tokenizer: Any, answer: str, correction: str) -> float:
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    c = tokenizer(correction, add_special_tokens=False)["input_ids"]
    return token_levenshtein(a, c) / max(1, len(a))


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> dict[str, float]:
    """Least-squares line y = slope x + intercept, and R^2."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys))
    return {"slope": slope, "intercept": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot else 0.0}


def control_grid(corrector: Any, pairs: Sequence[tuple[str, str]], directions: dict[int, Any],
                 alphas: Sequence[float], *, seed: int, progress: Any = None) -> list[dict[str, Any]]:
    """Corrections of ``pairs`` with ``alpha x directions[layer]`` added at each layer, for each alpha."""
    model, tokenizer = corrector.generator.model, corrector.tokenizer
    rows = []
    for alpha in alphas:
        with ResidualSteer(model, {layer: alpha * v for layer, v in directions.items()} if alpha else {}):
            out = corrector.correct([q for q, _ in pairs], [a for _, a in pairs], seed=seed)
        ratios = [levenshtein_ratio(tokenizer, a, o.text) for (_, a), o in zip(pairs, out)]
        rows.append({"alpha": float(alpha), "levenshtein_ratio": sum(ratios) / len(ratios),
                     "copy_rate": sum(o.text.strip() == a.strip() for (_, a), o in zip(pairs, out)) / len(pairs),
                     "mean_tokens": sum(o.completion_tokens for o in out) / len(out),
                     "examples": [{"question": q, "answer": a, "correction": o.text} for (q, a), o in
                                  list(zip(pairs, out))[:3]]})
        if progress:
            progress(f"alpha {alpha:+.2f}: mean Levenshtein ratio {rows[-1]['levenshtein_ratio']:.3f}, copy rate "
                     f"{rows[-1]['copy_rate']:.0%}")
    return rows
