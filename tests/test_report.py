"""The run report's tables, from a run directory's files."""

from __future__ import annotations

from w2s.data.files import write_jsonl
from w2s.report import answers_judged, answers_table, corrected_answers


def test_the_answers_judged_show_each_policys_length_and_cut_off_share(tmp_path):
    def answers(round_index, policy, tokens, reasons):
        rows = [{"id": str(i), "answer": "x", "policy": policy, "finish_reason": r,
                 **({} if t is None else {"completion_tokens": t})} for i, (t, r) in enumerate(zip(tokens, reasons))]
        write_jsonl(tmp_path / f"round-{round_index:02d}" / "eval-answers" / "answers.jsonl", rows)

    answers(0, "initial", [100, 128, 128, 60], ["stop", "length", "length", "stop"])
    answers(1, "round-1", [128, 128, 128, 128], ["length"] * 4)
    answers(2, "round-2", [None, None], ["stop", "length"])  # kept before the token count was recorded
    rows = answers_judged(tmp_path)
    assert rows == [{"round": 0, "policy": "initial", "n": 4, "mean_tokens": 104.0, "cut_off_rate": 0.5},
                    {"round": 1, "policy": "round-1", "n": 4, "mean_tokens": 128.0, "cut_off_rate": 1.0},
                    {"round": 2, "policy": "round-2", "n": 2, "mean_tokens": None, "cut_off_rate": 0.5}]
    table = answers_table(rows)
    assert table.rows[1] == [1, "round-1", 4, "128.0", "100%"] and table.rows[2][3] == "-"


def test_what_each_round_trained_on_counts_cut_off_answers_and_corrections_and_copies(tmp_path):
    rows = [{"answer": "long", "finish_reason": "length", "correction": "short", "correction_finish_reason": "stop"},
            {"answer": "same ", "finish_reason": "stop", "correction": "same", "correction_finish_reason": "stop"},
            {"answer": "a", "finish_reason": "length", "correction": "b", "correction_finish_reason": "length"},
            {"answer": "c", "finish_reason": "length", "correction": "d", "correction_finish_reason": "stop"}]
    write_jsonl(tmp_path / "round-01" / "correct" / "corrections.jsonl", rows)
    assert corrected_answers(tmp_path) == [{"round": 1, "n": 4, "answers_cut_off": 0.75, "corrections_cut_off": 0.25,
                                            "copied": 0.25}]
