"""w2s.aligner.dataset: deterministic split, warm-up rows, duplicate report, data hash."""

from __future__ import annotations

import json

import pytest

from w2s.aligner.dataset import load_triples, split_indices, warmup_subset
from w2s.config.schema import TripleDataConfig
from w2s.errors import DataError


def _write(tmp_path, rows):
    p = tmp_path / "triples.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def _rows(n):
    return [{"question": f"q{i}", "answer": f"a{i}", "correction": f"c{i}"} for i in range(n)]


def _qs(n):
    return [f"q{i}" for i in range(n)]


def test_split_is_deterministic_disjoint_and_complete():
    tr, ev = split_indices(_qs(100), 0.1, seed=42)
    assert (tr, ev) == split_indices(_qs(100), 0.1, seed=42)
    assert len(ev) == 10 and sorted(tr + ev) == list(range(100)) and not set(tr) & set(ev)
    assert split_indices(_qs(100), 0.1, seed=43)[1] != ev
    assert split_indices(_qs(3), 0.05, seed=0)[1] != []  # at least one held out
    assert split_indices(_qs(1), 0.5, seed=0) == ([0], [])  # never an empty train split
    assert split_indices(_qs(10), 0.0, seed=0) == (list(range(10)), [])


def test_split_holds_out_whole_questions():
    # The PKU template dataset repeated: 2 questions x 20 rows. A row split would put both questions on both sides.
    questions = ["How do I bake bread?", "Is it safe to mix bleach and ammonia?"] * 20
    tr, ev = split_indices(questions, 0.1, seed=0)
    assert len(ev) == 20 and len(tr) == 20
    assert {questions[i] for i in ev}.isdisjoint({questions[i] for i in tr})
    # Questions equal after normalisation (case, spaces) are one question.
    tr, ev = split_indices(["Why?", "why? ", "How?", "how?"], 0.25, seed=3)
    assert {frozenset(tr), frozenset(ev)} == {frozenset({0, 1}), frozenset({2, 3})}


def test_load_triples_reports_duplicates_and_skips(tmp_path):
    rows = _rows(20) + [{"question": "Q5 ", "answer": "x", "correction": "y"}, {"question": "q1", "answer": 3}]
    p = _write(tmp_path, rows)
    split = load_triples(TripleDataConfig(path=str(p), on_bad_row="skip"), eval_fraction=0.25, seed=1)
    assert len(split.train) + len(split.eval) == 21 and len(split.eval) == 5
    assert split.skipped == 1 and "line 22" in split.problems[0]
    assert split.duplicates == [[5, 20]]
    rep = split.report()
    assert rep["duplicate_question_groups"] == 1 and rep["duplicate_question_rows"] == 2
    again = load_triples(TripleDataConfig(path=str(p), on_bad_row="skip"), eval_fraction=0.25, seed=1)
    assert [t.id for t in again.eval] == [t.id for t in split.eval] and again.sha256 == split.sha256


def test_custom_keys_and_hash_independent_of_format(tmp_path):
    rows = [{"q": r["question"], "a": r["answer"], "c": r["correction"]} for r in _rows(6)]
    p = tmp_path / "t.json"
    p.write_text(json.dumps(rows))
    cfg = TripleDataConfig(path=str(p), question_key="q", answer_key="a", correction_key="c")
    s1 = load_triples(cfg, eval_fraction=0.0, seed=0)
    s2 = load_triples(TripleDataConfig(path=str(_write(tmp_path, _rows(6)))), eval_fraction=0.0, seed=0)
    assert s1.sha256 == s2.sha256 and s1.train[0].question == "q0"


def test_warmup_subset_copies_answers():
    from w2s.aligner.dataset import Triple

    train = [Triple(i, f"q{i}", f"a{i}", f"c{i}") for i in range(50)]
    warm = warmup_subset(train, 0.2, seed=42)
    assert len(warm) == 10 and warm == warmup_subset(train, 0.2, seed=42)
    assert all(t.correction == t.answer == f"a{t.id}" for t in warm)
    assert warmup_subset(train, 0.0, seed=1) == [] and len(warmup_subset(train[:3], 0.01, seed=1)) == 1


def test_preference_rows_become_triples_with_identity_rows_for_the_warm_up(tmp_path):
    rows = [  # PKU-SafeRLHF's layout: two responses, a label, safety flags
        {"prompt": "q1", "response_0": "bad", "response_1": "good", "safer_response_id": 1,
         "is_response_0_safe": False, "is_response_1_safe": True},
        {"prompt": "q2", "response_0": "fine", "response_1": "also fine", "safer_response_id": 0,
         "is_response_0_safe": True, "is_response_1_safe": True},
        {"prompt": "q3", "response_0": "right", "response_1": "wrong", "safer_response_id": "0",
         "is_response_0_safe": True, "is_response_1_safe": False},
    ]
    p = _write(tmp_path, rows)
    cfg = TripleDataConfig(path=str(p), format="preference", question_key="prompt",
                           response_keys=["response_0", "response_1"], label_key="safer_response_id",
                           acceptable_keys=["is_response_0_safe", "is_response_1_safe"], identity="acceptable")
    split = load_triples(cfg, eval_fraction=0.0, seed=0)
    by_q = {t.question: t for t in split.train}
    assert (by_q["q1"].answer, by_q["q1"].correction, by_q["q1"].identity) == ("bad", "good", False)
    assert (by_q["q3"].answer, by_q["q3"].correction) == ("wrong", "right")
    assert (by_q["q2"].answer, by_q["q2"].correction, by_q["q2"].identity) == ("fine", "fine", True)
    assert [t.question for t in warmup_subset(split.train, 0.0, seed=0)] == ["q2"]  # identity rows warm up
    # chosen/rejected rows (HH-RLHF, UltraFeedback), responses as chat messages.
    p2 = _write(tmp_path, [{"prompt": "q", "chosen": [{"role": "user", "content": "q"},
                                                      {"role": "assistant", "content": "yes"}],
                            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "no"}]}])
    t = load_triples(TripleDataConfig(path=str(p2), format="preference", question_key="prompt"),
                     eval_fraction=0.0, seed=0).train[0]
    assert (t.answer, t.correction) == ("no", "yes")
    bad = _write(tmp_path, [{"prompt": "q", "response_0": "a", "response_1": "b", "safer_response_id": 2}])
    with pytest.raises(DataError, match="safer_response_id.*must be 0 or 1"):
        load_triples(TripleDataConfig(path=str(bad), format="preference", question_key="prompt",
                                      response_keys=["response_0", "response_1"], label_key="safer_response_id"),
                     eval_fraction=0.0, seed=0)
