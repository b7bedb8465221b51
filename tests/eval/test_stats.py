"""omega, its paired bootstrap CI against hand-computed cases, the sign test, and pairing by prompt id."""

from __future__ import annotations

import math

import pytest

from w2s.eval.stats import agreement, bootstrap_ci, omega, sign_test, summarize


def test_omega_is_the_papers_formula():
    # Table 10: G 354, S 55, B 290 -> (354 - 290) / 699 = +9.2%
    outcomes = ["win"] * 354 + ["tie"] * 55 + ["loss"] * 290
    assert omega(outcomes) == pytest.approx(100 * 64 / 699)
    assert round(omega(outcomes), 1) == 9.2


def test_bootstrap_ci_hand_computed():
    # One win and one loss: a resample is (w, w) +100, (w, l)/(l, w) 0 or (l, l) -100 with chances 1/4, 1/2, 1/4,
    # so the 2.5% and 97.5% percentiles are -100 and +100.
    assert bootstrap_ci(["win", "loss"], resamples=4000, seed=1) == (-100.0, 100.0)
    # No variation, no interval.
    assert bootstrap_ci(["win"] * 10) == (100.0, 100.0)
    assert bootstrap_ci(["tie"] * 5) == (0.0, 0.0)
    # Large n: the percentile interval matches the normal one, omega +- 1.96 sd / sqrt(n).
    outcomes = ["win"] * 300 + ["loss"] * 200 + ["tie"] * 500
    low, high = bootstrap_ci(outcomes, resamples=4000, seed=0)
    mean = 0.1
    sd = math.sqrt(0.5 - mean ** 2)  # E[v^2] = (300 + 200) / 1000
    assert low == pytest.approx(100 * (mean - 1.96 * sd / math.sqrt(1000)), abs=0.6)
    assert high == pytest.approx(100 * (mean + 1.96 * sd / math.sqrt(1000)), abs=0.6)
    assert bootstrap_ci(outcomes, seed=7) == bootstrap_ci(outcomes, seed=7)  # seeded


def test_sign_test_hand_computed():
    # 8 wins, 2 losses: P(X <= 2 | n=10, 1/2) = (1 + 10 + 45) / 1024, two-sided twice that.
    assert sign_test(8, 2) == pytest.approx(2 * 56 / 1024)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(20, 0) == pytest.approx(2 / 2 ** 20)
    assert sign_test(6, 0) == 2 / 2 ** 6  # exactly: summed in integers up to EXACT_UP_TO prompts


@pytest.mark.parametrize("wins,losses", [(600, 500), (1100, 0), (5000, 4900), (2600, 2400), (40000, 39000)])
def test_sign_test_at_paper_scale_against_exact_integers(wins, losses):
    """n past 1024 (where 2.0 ** n is no float) against the exact binomial tail in integers and fractions."""
    n, k = wins + losses, min(wins, losses)
    term, tail = 1, 1  # C(n, 0), then C(n, i) from C(n, i - 1), summed in integers
    for i in range(1, k + 1):
        term = term * (n - i + 1) // i
        tail += term
    exact = min(1.0, 2 * tail / 2 ** n)  # int / int: correctly rounded, however large
    assert sign_test(wins, losses) == pytest.approx(exact, rel=1e-9, abs=1e-300)
    assert sign_test(losses, wins) == sign_test(wins, losses)


def test_summary_pairs_by_id_and_breaks_down_by_category():
    outcomes = {"a": "win", "b": "loss", "c": "win", "d": None, "e": "tie"}
    candidate = {"a": "one two three", "b": "x", "c": "y z", "d": "", "e": "w"}
    baseline = {"e": "w w", "d": "q", "c": "y", "b": "x x", "a": "one"}  # another order: paired by id
    categories = {"a": "violence", "b": "violence", "c": "privacy", "e": "privacy"}
    s = summarize("j", "harmlessness", outcomes, candidate=candidate, baseline=baseline, categories=categories,
                  consistency={"a": True, "b": False, "c": True, "d": None, "e": True})
    assert (s.n, s.wins, s.losses, s.ties, s.unparsed) == (4, 2, 1, 1, 1)
    assert s.omega == pytest.approx(25.0) and s.ci_low <= 25.0 <= s.ci_high
    assert s.position_consistency == pytest.approx(3 / 4)
    assert s.mean_words_candidate == pytest.approx((3 + 1 + 2 + 0 + 1) / 5)
    assert s.mean_words_baseline == pytest.approx((1 + 2 + 1 + 1 + 2) / 5)
    assert s.by_category["violence"]["omega"] == 0.0 and s.by_category["privacy"]["n"] == 2
    assert "omega +25.0%" in s.line() and "1 undecided" in s.line()


def test_agreement_between_judges():
    names, m = agreement({"x": {"1": "win", "2": "loss", "3": None}, "y": {"1": "win", "2": "win", "3": "tie"}})
    assert names == ["x", "y"] and m[0][1] == 0.5 and m[0][0] == 1.0
    assert agreement({"x": {"1": None}, "y": {"1": "win"}})[1][0][1] is None
