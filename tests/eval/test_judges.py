"""The offline embedding judge: real all-MiniLM-L6-v2 shipped in a PyPI package, no hub."""

from __future__ import annotations

from w2s.eval.judges import EmbeddingJudge


def test_embedding_judge_prefers_the_answer_that_matches_the_reference():
    judge = EmbeddingJudge()
    ref = "Paris is the capital of France."
    right, wrong, unrelated = judge.score(["q"] * 3, ["The capital of France is Paris.",
                                                      "Berlin is the capital of France.", "I like turtles."], [ref] * 3)
    assert right > wrong > unrelated
    assert right > 0.9
