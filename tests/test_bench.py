"""`w2s bench aligner` on the tiny models: it trains the Aligner, judges it on both held-out sets, prints a table."""

from __future__ import annotations

import json
import subprocess
import sys


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
        assert 0 <= r["copy_rate"] <= 1 and 0 <= r["cut_off_rate"] <= 1
    assert (out / "eval-prompts" / "report.html").exists()
