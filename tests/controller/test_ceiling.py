"""PGR for generative weak-to-strong, against fixed verdicts: the point value by hand, its bootstrap CI, and the
rows a run's kept outcomes give (the ceiling track itself runs in tests/controller/test_loop.py)."""

from __future__ import annotations

import json
import math

import pytest

from w2s.controller.ceiling import pgr, pgr_rows, pgr_with_ci


def test_pgr_by_hand():
    # omega: w2s (3 - 1) / 5 = 0.4, floor (1 - 1) / 5 = 0, ceiling (4 - 0) / 5 = 0.8: PGR = 0.4 / 0.8
    w2s, floor, ceiling = [1, 1, 1, -1, 0], [1, -1, 0, 0, 0], [1, 1, 1, 1, 0]
    assert pgr(w2s, floor, ceiling) == pytest.approx(0.5)
    assert pgr(ceiling, floor, ceiling) == pytest.approx(1.0) and pgr(floor, floor, ceiling) == 0.0
    assert math.isnan(pgr(w2s, ceiling, floor))  # a ceiling below its floor: no gap to recover


def test_pgr_ci_resamples_prompts_with_their_three_outcomes_together():
    w2s, floor, ceiling = [1] * 30 + [0] * 30, [0] * 60, [1] * 60
    row = pgr_with_ci(w2s, floor, ceiling, seed=1)
    assert row["pgr"] == pytest.approx(0.5) and row["n"] == 60
    assert (row["omega_w2s"], row["omega_floor"], row["omega_ceiling"]) == (50.0, 0.0, 100.0)
    # ceiling - floor is 1 in every resample: PGR is the resampled w2s mean, about 0.5 +- 1.96 x 0.5 / sqrt(60).
    assert row["pgr_ci_low"] == pytest.approx(0.5 - 0.127, abs=0.04)
    assert row["pgr_ci_high"] == pytest.approx(0.5 + 0.127, abs=0.04)
    assert row["resamples_without_gap"] == 0
    flat = pgr_with_ci([1, 0], [0, 0], [0, 0])
    assert math.isnan(flat["pgr"]) and math.isnan(flat["pgr_ci_low"]) and flat["resamples_without_gap"] == 2000


def test_a_runs_outcomes_give_its_pgr_per_judge(tmp_path):
    def outcomes(where, verdicts):
        (tmp_path / where).mkdir(parents=True)
        (tmp_path / where / "outcomes.jsonl").write_text("".join(
            json.dumps({"judge": "similarity", "id": f"p{i}", "outcome": o}) + "\n" for i, o in enumerate(verdicts)))

    outcomes("round-01/compare/initial", ["win", "win", "tie", "loss", "win"])
    outcomes("round-01/compare/ceiling", ["win", "win", "win", "tie", None])  # p4 undecided: out of all three
    outcomes("aligner-eval-prompts", ["win", "loss", "tie", "tie", "loss"])
    [(judge, row)] = pgr_rows(tmp_path, 1).items()
    # p0-p3: w2s (2 - 1) / 4, floor (1 - 1) / 4 = 0, ceiling 3 / 4: PGR = 0.25 / 0.75
    assert judge == "similarity" and row["n"] == 4 and row["pgr"] == pytest.approx(1 / 3)
    assert pgr_rows(tmp_path, 2) == {}  # a round without a ceiling comparison
