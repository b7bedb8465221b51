"""`w2s bench aligner` on the tiny models: it trains the Aligner, judges it on both held-out sets, prints a table."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow  # trains an Aligner
def test_bench_aligner_reports_both_held_out_sets(tmp_path):
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "w2s.cli", "bench", "aligner", "--recipe", "tiny/aligner", "--json", "--output",
           str(out), "eval.max_prompts=4", "correct.max_new_tokens=8", "eval.generate.max_new_tokens=8"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = json.loads(next(line for line in reversed(result.stdout.splitlines()) if line.startswith("[")))
    assert [r["set"] for r in rows] == ["held-out triples", "eval prompts"]
    heldout = [json.loads(line) for line in (out / "aligner.work" / "eval.jsonl").read_text().splitlines()]
    assert rows[0]["n"] == len(heldout) and rows[1]["n"] == 4
    for r in rows:
        wins, losses, ties = (int(x) for x in r["W/L/T"].split("/"))
        assert wins + losses + ties == r["n"] and r["omega"] == round(100 * (wins - losses) / r["n"], 1)
        # The rates are those of the corrections written (copies of the answer, cut off at max_new_tokens).
        written = [json.loads(line) for line in
                   (out / r["set"].replace(" ", "-") / "corrections.jsonl").read_text().splitlines()]
        assert len(written) == r["n"]
        cut = sum(w["w2s_correction"]["finish_reason"] == "length" for w in written)
        assert r["cut_off_rate"] == round(cut / r["n"], 3)
    assert (out / "eval-prompts" / "report.html").exists()


def test_bench_loop_says_where_a_runs_time_went(tmp_path):
    """`w2s bench loop --run-dir`: per stage, per round and for the whole run, wall against work seconds."""
    run = tmp_path / "run"
    stages = {"aligner": (100.0, 90.0), "round-01/generate": (10.0, 4.0), "round-01/train": (30.0, 27.0),
              "round-02/generate": (8.0, 6.0)}
    for where, (wall, work) in stages.items():
        (run / where).mkdir(parents=True)
        (run / where / "manifest.json").write_text(json.dumps({"seconds": wall, "work_seconds": work}))
    (run / "cluster.json").write_text(json.dumps({"actors": [{"role": "generator"}, {"role": "trainer"},
                                                             {"role": "trainer"}]}))
    result = subprocess.run([sys.executable, "-m", "w2s.cli", "bench", "loop", "--run-dir", str(run), "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "actor processes started: generator 1, trainer 2" in result.stdout
    rows = {r["stage"]: r for r in json.loads(result.stdout.splitlines()[-1])}
    assert rows["round-01/generate"]["startup_and_orchestration_s"] == 6.0
    assert rows["round-01/generate"]["startup_share"] == "60%"
    assert (rows["round-01 (total)"]["wall_s"], rows["round-01 (total)"]["work_s"]) == (40.0, 31.0)
    assert rows["before the rounds (total)"]["startup_share"] == "10%"
    assert (rows["whole run (total)"]["wall_s"], rows["whole run (total)"]["work_s"]) == (148.0, 127.0)
    assert list(rows)[:4] == ["aligner", "round-01/generate", "round-01/train", "round-02/generate"]
