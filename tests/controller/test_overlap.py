"""Evaluation prompts the run also trains on are found before anything starts: refused, naming them, unless
eval.allow_overlap, which runs with the counts in metrics.jsonl and the report; the report says each set's role
as configured and nothing it cannot check."""

from __future__ import annotations

import json

import pytest

from w2s.config.compose import load_config
from w2s.controller.overlap import check_overlap
from w2s.data.prompts import Prompt
from w2s.errors import DataError
from w2s.report import eval_set_note

TRIPLES = "recipes/data/tiny/aligner_triples.jsonl"


def _eval_prompts():
    question = json.loads(open(TRIPLES).readline())["question"]  # "What is 1 plus 1?"
    return [Prompt("e1", "  WHAT is 1 plus 1?  "), Prompt("e2", "Name a colour."), Prompt("e3", "Why is the sky blue?"),
            Prompt("e4", question)]


def test_evaluation_prompts_among_the_loop_prompts_or_the_aligners_triples_are_refused_naming_them():
    cfg = load_config("tiny/aligner", ["aligner.train.enabled=true"])
    loop = [Prompt("l1", "name a   colour."), Prompt("l2", "Something else entirely.")]
    with pytest.raises(DataError) as e:
        check_overlap(cfg, loop, _eval_prompts())
    msg = str(e.value)
    assert "of the 4 evaluation prompts, 1 in loop.prompts (ids e2) and 2 in the Aligner's training questions " \
           "(ids e1, e4)" in msg and "eval.allow_overlap=true" in msg
    allowed = load_config("tiny/aligner", ["aligner.train.enabled=true", "eval.allow_overlap=true"])
    assert check_overlap(allowed, loop, _eval_prompts()) == {"overlap_loop_prompts": 1,
                                                            "overlap_aligner_questions": 2}
    assert check_overlap(cfg, loop[1:], _eval_prompts()[2:3]) == {"overlap_loop_prompts": 0,
                                                                  "overlap_aligner_questions": 0}


def test_a_given_aligner_without_a_record_of_its_questions_is_not_checked_and_says_so(capsys, tiny_weak):
    cfg = load_config("tiny/dpo", [f"model.aligner.path={tiny_weak}"])  # an Aligner the run does not train
    assert check_overlap(cfg, [], _eval_prompts()) == {"overlap_loop_prompts": 0, "overlap_aligner_questions": None}
    assert "keeps no record of its training questions" in capsys.readouterr().out


def test_the_report_says_the_role_as_configured_and_the_counts_checked(tmp_path):
    (tmp_path / "config.yaml").write_text("eval:\n  role: test\n")
    row = {"stage": "eval-vs-initial/similarity", "overlap_loop_prompts": 0, "overlap_aligner_questions": None}
    note = eval_set_note(tmp_path, [row])
    assert "configured as a test set (eval.role=test)" in note
    assert "0 of them among the loop's prompts, the Aligner keeps no record of its training questions" in note
    (tmp_path / "config.yaml").write_text("eval:\n  role: dev\n")
    assert "it may have been used to choose something" in eval_set_note(tmp_path, [])
