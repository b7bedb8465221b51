"""Several seeds of one recipe, and one report over them.

``w2s run RECIPE --seeds 1,2,3`` runs the recipe once per seed, one after the other, each in its own resumable run
directory (``RUN_DIR/seed-N``, ``run.seed=N``); ``w2s report RUN_DIR...`` (run by ``--seeds`` at the end) reads
the per-prompt outcomes every run kept and reports, per comparison and judge: the mean of the seeds' omegas, a 95%
CI from a two-level bootstrap (seeds drawn with replacement, then each drawn seed's prompts), and every seed's own
omega, in ``report.md``, ``report.html`` and ``summary.json``.

Why two levels: a CI over prompts alone says how much another draw of prompts would move one run's result; a new
study also draws new seeds (the Aligner's split and training, the policy's samples and training), and the spread
between seeds is often the larger part.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from w2s.eval.stats import outcome_values


def seed_dirs(base: Path, seeds: Sequence[int]) -> list[Path]:
    return [base / f"seed-{s}" for s in seeds]


def parse_seeds(text: str) -> list[int]:
    """``1,2,3`` -> [1, 2, 3]: whole numbers, at least two, none repeated."""
    import argparse

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers separated by commas, e.g. 1,2,3") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: give two or more different seeds, e.g. 1,2,3")
    return seeds


def _comparisons(run_dir: Path) -> dict[tuple[str, str], list[int]]:
    """(comparison, judge) -> the decided outcomes (+1, -1, 0) of one run, from the outcomes files it kept."""
    found: dict[str, Path] = {}
    for path in sorted(run_dir.glob("round-*/compare/*/outcomes.jsonl")):
        found[f"{path.parts[-4]} vs {path.parts[-2]}"] = path
    for stage, what in (("aligner-eval", "aligner on its held-out triples"),
                        ("aligner-eval-prompts", "aligner on the evaluation prompts")):
        for path in sorted(run_dir.glob(f"{stage}/outcomes.jsonl")):
            found[what] = path
        for path in sorted(run_dir.glob(f"round-*/{stage}/outcomes.jsonl")):  # aligner.per_round: Aligner_k
            found[f"{path.parts[-3]} {what}"] = path
    return {(label, judge): list(values.values()) for label, path in found.items()
            for judge, values in outcome_values(path).items()}


def two_level_ci(per_seed: Sequence[Sequence[int]], *, resamples: int = 4000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of the mean of the seeds' omegas: each resample draws seeds with replacement, then each drawn
    seed's prompts with replacement (seeded: the same CI every time)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = [np.asarray(v, dtype=np.float64) for v in per_seed if len(v)]
    means = np.empty(resamples)
    for r in range(resamples):
        picked = rng.integers(0, len(arrays), size=len(arrays))
        means[r] = np.mean([arrays[i][rng.integers(0, len(arrays[i]), size=len(arrays[i]))].mean()
                            for i in picked]) * 100.0
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def seeds_together(per_seed: Sequence[Sequence[int]]) -> tuple[list[float], float, float, float]:
    """Each seed's omega (%), their mean, and the mean's two-level CI, from each seed's decided outcomes (every
    seed with at least one)."""
    omegas = [100.0 * sum(v) / len(v) for v in per_seed]
    low, high = two_level_ci(per_seed)
    return omegas, sum(omegas) / len(omegas), low, high


def aggregate(run_dirs: Sequence[Path]) -> list[dict[str, Any]]:
    """Per (comparison, judge) found in every run: mean omega over the seeds, its two-level CI, each seed's omega
    and decided prompts. A comparison missing from some run (an unfinished one) is left out, not averaged."""
    per_run = [_comparisons(d) for d in run_dirs]
    shared = sorted(set.intersection(*(set(c) for c in per_run))) if per_run else []
    rows = []
    for key in shared:
        values = [c[key] for c in per_run]
        omegas, mean, low, high = seeds_together(values)
        rows.append({"comparison": key[0], "judge": key[1], "seeds": len(values),
                     "mean_omega": mean, "ci_low": low, "ci_high": high,
                     "per_seed": [{"run": str(d), "omega": o, "n": len(v)}
                                  for d, o, v in zip(run_dirs, omegas, values, strict=True)]})
    return rows


def write_seeds_report(run_dirs: Sequence[Path], out: Path) -> Path:
    """``report.md``, ``report.html`` and ``summary.json`` over the runs in ``out``; returns the HTML report."""
    import time

    from w2s.data.files import atomic_write_json
    from w2s.eval.html import Section, Table, Text
    from w2s.eval.report import write_reports

    rows = aggregate(run_dirs)
    atomic_write_json(out / "summary.json", {"runs": [str(d) for d in run_dirs], "comparisons": rows})
    table = Table(["comparison", "judge", "seeds", "mean ω (%)", "95% CI (seeds and prompts)", "per seed ω (%)"],
                  [[r["comparison"], r["judge"], r["seeds"], f"{r['mean_omega']:+.1f}",
                    f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]",
                    ", ".join(f"{p['omega']:+.1f}" for p in r["per_seed"])] for r in rows],
                  "Mean over seeds of each run's ω; the CI draws seeds, then each drawn seed's prompts.")
    note = Text(f"{len(run_dirs)} runs: " + ", ".join(str(d) for d in run_dirs) + ". Only comparisons every run "
                "finished are shown.")
    html, _ = write_reports(out, "w2s: results over seeds", [Section("Over seeds", [note, table])],
                            subtitle=f"Written {time.strftime('%Y-%m-%d %H:%M')}")
    return html
