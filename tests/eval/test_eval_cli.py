"""`w2s eval` end to end: two answer files (paired by id, in different orders), and an upstream model against the
same upstream with an Aligner stacked on it, on the tiny models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from w2s.data.files import read_jsonl

pytestmark = pytest.mark.slow  # the w2s eval CLI in subprocesses, with judge models

EVAL = "recipes/data/quickstart/dev.jsonl"


def w2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w2s.cli", "eval", *args], capture_output=True, text=True,
                          timeout=900)


def test_two_answer_files_paired_by_id(tmp_path):
    prompts = read_jsonl(EVAL)[:6]
    cand, base = tmp_path / "cand.jsonl", tmp_path / "base.jsonl"
    # The candidate says what the reference says; the baseline says something unrelated. Different row orders.
    cand.write_text("".join(json.dumps({"id": p["id"], "answer": p["reference"]}) + "\n" for p in prompts))
    base.write_text("".join(json.dumps({"id": p["id"], "answer": "I like turtles."}) + "\n"
                            for p in reversed(prompts)))
    out = tmp_path / "out"
    result = w2s("--prompts", EVAL, "--candidate", str(cand), "--baseline", str(base), "--output", str(out),
                 "--max-prompts", "6")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())["judges"]["similarity"]
    assert (s["wins"], s["losses"], s["n"]) == (6, 0, 6) and s["omega"] == 100.0
    assert (s["ci_low"], s["ci_high"]) == (100.0, 100.0) and s["p_value"] == 2 / 2 ** 6
    assert set(s["by_category"]) == {p["category"] for p in prompts}
    assert "similarity (reference match): omega +100.0%" in result.stdout
    html = (out / "report.html").read_text()
    assert "I like turtles." in html and "ω (%)" in html and (out / "report.md").exists()
    # The report names the command that wrote it (a results file quoting it says how to make it again).
    assert f"Written by `w2s eval --prompts {EVAL} --candidate {cand} " in (out / "report.md").read_text()
    # The baseline swapped in: the same prompts, every outcome reversed.
    swapped = w2s("--prompts", EVAL, "--candidate", str(base), "--baseline", str(cand), "--output",
                  str(tmp_path / "swapped"), "--max-prompts", "6")
    assert swapped.returncode == 0
    assert json.loads((tmp_path / "swapped" / "summary.json").read_text())["judges"]["similarity"]["omega"] == -100.0


def test_missing_answers_and_bad_arguments_are_clear_errors(tmp_path):
    short = tmp_path / "short.jsonl"
    short.write_text(json.dumps({"id": "e01", "answer": "x"}) + "\n")
    result = w2s("--prompts", EVAL, "--candidate", str(short), "--baseline", str(short), "--output",
                 str(tmp_path / "o"), "--max-prompts", "3")
    assert result.returncode == 1 and f"{short}: no answer for 2 of the 3 prompt ids" in result.stderr
    result = w2s("--prompts", EVAL, "--candidate", str(short), "--output", str(tmp_path / "o"))
    assert result.returncode == 1 and "give both --candidate and --baseline" in result.stderr
    result = w2s("--prompts", EVAL, "--candidate", str(short), "--baseline", str(short), "--output",
                 str(tmp_path / "o"), "eval.judges.j.kind=pairwise", "eval.judges.j.preset=helpfulness")
    assert result.returncode == 2 and "eval.judges.j.endpoint.base_url" in result.stderr
    # A negative limit is refused, not read as "all but the last".
    result = w2s("--prompts", EVAL, "--candidate", str(short), "--baseline", str(short), "--output",
                 str(tmp_path / "o"), "--max-prompts", "-1")
    assert result.returncode == 2 and "-1 is negative; give 0 (all rows) or a row count" in result.stderr


def test_repeated_ids_are_refused_naming_both_rows(tmp_path):
    """Prompts and answers are paired by id: a repeated id would be judged against another row's reference."""
    rows = read_jsonl(EVAL)[:3]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({**r, "id": "same" if i else r["id"]}) + "\n" for i, r in
                               enumerate(rows)))
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": r["id"], "answer": "x"}) + "\n" for r in rows))
    result = w2s("--prompts", str(prompts), "--candidate", str(answers), "--baseline", str(answers), "--output",
                 str(tmp_path / "o"))
    assert result.returncode == 1
    assert f"{prompts}:line 3: field 'id': 'same' was already the id of {prompts}:line 2" in result.stderr
    twice = tmp_path / "twice.jsonl"
    twice.write_text("".join(json.dumps({"id": r["id"], "answer": a}) + "\n" for r in rows for a in ("x", "y")))
    result = w2s("--prompts", EVAL, "--candidate", str(twice), "--baseline", str(answers), "--output",
                 str(tmp_path / "o2"), "--max-prompts", "3")
    assert result.returncode == 1 and f"{twice}:line 2: field 'id'" in result.stderr


def test_upstream_against_upstream_with_the_aligner(tmp_path, tiny_strong, tiny_weak):
    out = tmp_path / "out"
    args = ["--recipe", "tiny/sft", "--prompts", EVAL, "--upstream", tiny_strong, "--aligner", tiny_weak,
            "--output", str(out), "--max-prompts", "4", "eval.generate.max_new_tokens=8", "correct.max_new_tokens=8"]
    result = w2s(*args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    upstream = {r["id"]: r["answer"] for r in read_jsonl(out / "answers-upstream.jsonl")}
    corrections = read_jsonl(out / "corrections.jsonl")
    assert len(upstream) == 4 and [r["answer"] for r in corrections] == [upstream[r["id"]] for r in corrections]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judges"]["similarity"]["n"] == 4 and "Aligner" in summary["candidate"]
    # Run again: the upstream's answers and the corrections are reused, not generated again.
    again = w2s(*args)
    assert again.returncode == 0 and "already in" in again.stdout and "0 new" in again.stdout
