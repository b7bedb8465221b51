"""w2s.aligner.correction_file: the one correction path's resume, with a corrector whose output is decided by its
seed and its chunk (as a sampled batch is), so that a row made in another chunk would show."""

from __future__ import annotations

import json

import pytest

from w2s.aligner.correct import Correction
from w2s.aligner.correction_file import PROVENANCE_KEY, CorrectionFile
from w2s.errors import W2SError

ROWS = [{"id": f"r{i}", "q": f"question {i}", "a": f"answer {i}"} for i in range(7)]


class ChunkCorrector:
    def __init__(self):
        self.asked: list[list[str]] = []

    def correct(self, questions, answers, *, seed=None):
        self.asked.append(list(questions))
        return [Correction(f"{a} fixed (seed {seed}, chunk of {len(questions)})", 4, 2, "stop") for a in answers]


def _file(path, *, chunk=3, other_settings="refuse", **provenance):
    return CorrectionFile(path, question_key="q", answer_key="a", output_key="c",
                          provenance={"template": "t", "base_seed": 10, "chunk": chunk, **provenance}, chunk=chunk,
                          must_match=("template", "base_seed", "chunk"), other_settings=other_settings)


def test_every_row_is_what_one_run_writes_after_a_torn_chunk_and_a_changed_answer(tmp_path):
    whole = tmp_path / "whole.jsonl"
    _file(whole).write(ChunkCorrector(), ROWS, base_seed=10, echo=None)
    out = tmp_path / "out.jsonl"
    _file(out).write(ChunkCorrector(), ROWS, base_seed=10, echo=None)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:4]) + lines[4][:9])  # chunk 1 (rows 3-5) cut off after its first row
    corrector = ChunkCorrector()
    written = _file(out).write(corrector, ROWS, base_seed=10, echo=None)
    assert corrector.asked == [["question 3", "question 4", "question 5"], ["question 6"]]
    assert (written.resumed, written.new) == (3, 4)
    assert out.read_bytes() == whole.read_bytes()
    assert [r["c"] for r in written.rows][3] == "answer 3 fixed (seed 13, chunk of 3)"

    changed = [dict(r) for r in ROWS]
    changed[1]["a"] = "another answer"
    corrector = ChunkCorrector()
    written = _file(out).write(corrector, changed, base_seed=10, echo=None)
    assert corrector.asked == [["question 0", "question 1", "question 2"]]  # row 1's whole chunk, once
    assert [r["id"] for r in map(json.loads, out.read_text().splitlines())].count("r1") == 1
    assert written.rows[1]["c"] == "another answer fixed (seed 10, chunk of 3)" and written.resumed == 4


def test_rows_made_under_other_settings_are_refused_or_set_aside(tmp_path):
    out = tmp_path / "out.jsonl"
    _file(out, chunk=2).write(ChunkCorrector(), ROWS[:4], base_seed=10, echo=None)
    with pytest.raises(W2SError, match=r"cannot resume.*template: 't' there, 'u' now"):
        _file(out, template="u").write(ChunkCorrector(), ROWS, base_seed=10, echo=None)
    said = []
    corrector = ChunkCorrector()
    written = _file(out, chunk=2, other_settings="set_aside", template="u").write(corrector, ROWS, base_seed=10,
                                                                               echo=said.append)
    assert "set aside as out.stale" in said[0] and "template" in said[0]
    assert written.resumed == 0 and len(corrector.asked) == 4 and (tmp_path / "out.stale").exists()
    assert all(r[PROVENANCE_KEY]["template"] == "u" for r in written.rows)
    (tmp_path / "out.jsonl").write_text("not json\n{}\n")  # a run's stage: a file it cannot read is set aside too
    written = _file(out, other_settings="set_aside").write(ChunkCorrector(), ROWS, base_seed=10, echo=None)
    assert written.new == len(ROWS)
