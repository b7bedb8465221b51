"""An Aligner keeps digests of its training questions; `w2s eval --aligner` refuses prompts among them (before
anything starts) unless eval.allow_overlap, which records the count in summary.json and the report."""

from __future__ import annotations

import json

from w2s.aligner import trained_questions
from w2s.cli import main
from w2s.eval import cli as eval_cli


def _aligner(tmp_path, questions):
    folder = tmp_path / "aligner"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    trained_questions.write(folder, questions)
    return folder


def test_questions_match_across_case_unicode_form_and_whitespace(tmp_path):
    folder = _aligner(tmp_path, ["What is 1 plus 1?", "What is 1 plus 1?", "Name a colour."])
    assert len((folder / trained_questions.FILE).read_text().split()) == 2  # one line per distinct question
    prompts = [("a", "what is 1  plus 1?"), ("b", "Name a ｃolour.\n"), ("c", "What is 2 plus 2?")]
    assert trained_questions.seen_in_training(str(folder), prompts) == ["a", "b"]
    assert trained_questions.seen_in_training(str(tmp_path), prompts) is None  # an Aligner that records none


def _prompts_and_answers(tmp_path, n):
    prompts, answers = tmp_path / "prompts.jsonl", tmp_path / "answers.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}?", "reference": "r"}) + "\n"
                               for i in range(n)))
    answers.write_text("".join(json.dumps({"id": f"p{i}", "answer": "x"}) + "\n" for i in range(n)))
    return prompts, answers


def test_eval_refuses_prompts_the_aligner_trained_on_before_anything_starts(tmp_path, capsys):
    prompts, answers = _prompts_and_answers(tmp_path, 5)
    aligner = _aligner(tmp_path, ["question 1?", "QUESTION 3?", "something else"])
    args = ["eval", "--prompts", str(prompts), "--upstream", str(answers), "--aligner", str(aligner), "--output",
            str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "2 of the 5 prompts were the Aligner's training questions (ids p1, p3)" in err
    assert "eval.allow_overlap=true" in err and not (tmp_path / "out").exists()  # nothing started, nothing written


def test_an_allowed_overlap_is_counted_in_the_summary_and_the_report(tmp_path, capsys):
    from w2s.aligner.cli import compose
    from w2s.data.prompts import Prompt

    aligner = _aligner(tmp_path, ["Question 1?"])
    prompts = [Prompt(id=f"p{i}", prompt=f"Question {i}?") for i in range(3)]
    cfg = compose(None, ["eval.allow_overlap=true"], job="eval")
    overlap = eval_cli.aligner_overlap(str(aligner), prompts, cfg)
    assert overlap == {"checked": True, "aligner_training_questions": 1, "ids": ["p1"]}
    assert "warning: 1 of the 3 prompts were the Aligner's training questions" in capsys.readouterr().out
    from tests.eval.test_panel import Services

    answers = {p.id: "an answer" for p in prompts}
    assert eval_cli.evaluate_and_report(cfg, prompts, answers, answers, ("a", "b"), tmp_path / "out",
                                        lambda: Services(), overlap=overlap) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["overlap"] == overlap
    assert "1 of the 3 prompts were the Aligner's training questions." in (tmp_path / "out" / "report.md").read_text()
