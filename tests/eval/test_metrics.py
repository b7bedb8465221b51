from __future__ import annotations

import pytest

from w2s.eval.metrics import compare


def test_win_minus_loss_is_the_papers_omega():
    c = compare([0.9, 0.5, 0.3, 0.7], [0.1, 0.5, 0.6, 0.2])
    assert (c.wins, c.losses, c.ties, c.total) == (2, 1, 1, 4)
    assert c.win_minus_loss == pytest.approx(25.0)


def test_tie_margin():
    c = compare([0.50, 0.58], [0.49, 0.50], tie_margin=0.02)
    assert (c.wins, c.losses, c.ties) == (1, 0, 1)


def test_mismatched_lengths_rejected():
    with pytest.raises(ValueError):
        compare([1.0], [1.0, 2.0])
