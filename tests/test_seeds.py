"""Results over several seeds: the two-level bootstrap against known cases, the aggregate of outcome files as runs
keep them, and `w2s report` over runs."""

from __future__ import annotations

import json

import pytest

from w2s.cli import main
from w2s.seeds import aggregate, parse_seeds, two_level_ci


def test_the_two_level_ci_holds_the_spread_between_seeds():
    assert two_level_ci([[1] * 50, [1] * 30]) == (100.0, 100.0)  # every prompt of every seed won
    # Two seeds that disagree completely: each alone is certain, together the mean is anywhere between them.
    low, high = two_level_ci([[1] * 200, [-1] * 200])
    assert low == pytest.approx(-100.0) and high == pytest.approx(100.0)
    # Seeds that agree: the CI is the prompts' alone (about +-1.96 sd / sqrt(n) around the mean omega, 20 here).
    same = [[1] * 60 + [-1] * 40] * 5
    low, high = two_level_ci(same)
    half = 1.96 * (1 - 0.2 ** 2) ** 0.5 / (500 ** 0.5) * 100  # all 500 prompts weigh alike
    assert low == pytest.approx(20 - half, abs=2.0) and high == pytest.approx(20 + half, abs=2.0)
    assert two_level_ci(same, seed=3) == two_level_ci(same, seed=3)  # seeded


def _run(tmp_path, name, outcomes, extra=()):
    run = tmp_path / name
    (run / "run.json").parent.mkdir(parents=True)
    (run / "run.json").write_text("{}")
    for where, rows in [("round-02/compare/initial", outcomes), *extra]:
        (run / where).mkdir(parents=True, exist_ok=True)
        (run / where / "outcomes.jsonl").write_text("".join(
            json.dumps({"judge": "similarity", "id": f"p{i}", "outcome": o}) + "\n" for i, o in enumerate(rows)))
    return run


def test_the_aggregate_is_the_mean_of_each_runs_omega_over_comparisons_every_run_finished(tmp_path):
    a = _run(tmp_path, "seed-1", ["win", "win", "loss", "tie"], [("aligner-eval", ["win"] * 4)])
    b = _run(tmp_path, "seed-2", ["loss", "loss", "tie", None, "win"])  # one undecided prompt: not counted
    rows = aggregate([a, b])
    assert [(r["comparison"], r["judge"]) for r in rows] == [("round-02 vs initial", "similarity")]
    [row] = rows  # the Aligner's evaluation: in one run only, left out
    assert [p["omega"] for p in row["per_seed"]] == [25.0, -25.0] and [p["n"] for p in row["per_seed"]] == [4, 4]
    assert row["mean_omega"] == 0.0 and row["ci_low"] < 0 < row["ci_high"] and row["seeds"] == 2


def test_report_over_runs_writes_markdown_html_and_json(tmp_path, capsys):
    a = _run(tmp_path, "seed-1", ["win"] * 6 + ["loss"] * 2)
    b = _run(tmp_path, "seed-2", ["win"] * 4 + ["tie"] * 4)
    assert main(["report", str(a), str(b)]) == 0
    assert "report over 2 runs" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["comparisons"][0]["mean_omega"] == pytest.approx((50.0 + 50.0) / 2)
    md = (tmp_path / "report.md").read_text()
    assert "| round-02 vs initial | similarity | 2 | +50.0 |" in md and "+50.0, +50.0" in md
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(a), str(tmp_path / "nothing")]) == 1
    assert "is not a w2s run directory" in capsys.readouterr().err


def test_seeds_are_two_or_more_different_whole_numbers():
    assert parse_seeds("1,2, 3") == [1, 2, 3]
    for bad in ("1", "1,1", "a,b"):
        with pytest.raises(Exception, match="give"):
            parse_seeds(bad)


def test_run_takes_overrides_after_seeds():
    from w2s.cli import build_parser

    args, unknown = build_parser()[0].parse_known_args(["run", "tiny/dpo", "--seeds", "1,2", "run.dir=x", "a.b=1"])
    assert (args.seeds, args.overrides, unknown) == ([1, 2], ["run.dir=x", "a.b=1"], [])
