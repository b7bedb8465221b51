"""w2s.data.text: edit distances and duplicate groups."""

from __future__ import annotations

from w2s.data.text import (
    distance_stats,
    duplicate_groups,
    edit_distance,
    levenshtein,
    normalized_edit_distance,
)


def test_levenshtein_known_values():
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("flaw", "lawn") == 2
    assert levenshtein("same", "same") == 0
    assert levenshtein(["a", "b", "c"], ["a", "c"]) == 1


def test_word_and_char_units():
    a, b = "It is 7 .", "It is 6 ."
    assert edit_distance(a, b) == 1
    assert edit_distance(a, b, unit="char") == 1
    assert edit_distance("the cat sat", "the dog sat down") == 2
    assert normalized_edit_distance("the cat sat", "the dog sat down") == 0.5
    assert normalized_edit_distance("", "") == 0.0
    assert normalized_edit_distance("a b", "c d") == 1.0


def test_duplicates_after_normalisation():
    texts = ["What is 2+2?", "what  is 2+2?", "Tell me a joke", "WHAT IS 2+2?", "tell me a joke please"]
    assert duplicate_groups(texts) == [[0, 1, 3]]


def test_distance_stats():
    s = distance_stats([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert s["mean"] == 4.5 and s["median"] == 4.5 and s["min"] == 0 and s["max"] == 9 and s["p90"] == 8
    assert distance_stats([])["mean"] == 0.0
