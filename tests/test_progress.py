"""The live progress an actor reports and the one console line per stage the driver makes of it."""

from __future__ import annotations

import io

from w2s import progress


def test_snapshot_follows_the_work_and_is_empty_before_any():
    progress._STATE.clear()
    assert progress.snapshot() == {}
    progress.start(16, "rows")
    progress.update(4, tokens=120.0)
    snap = progress.snapshot()
    assert snap["done"] == 4 and snap["total"] == 16 and snap["unit"] == "rows" and snap["tokens"] == 120.0
    assert snap["elapsed"] >= 0 and "started" not in snap  # a monotonic clock means nothing in another process
    progress.start(3, "steps")  # new work forgets the old numbers
    assert "tokens" not in progress.snapshot() and progress.snapshot()["done"] == 0


def test_describe_sums_the_actors_of_a_stage():
    rows = [{"done": 4, "total": 8, "unit": "rows", "tokens": 100.0, "elapsed": 2.0},
            {"done": 2, "total": 8, "unit": "rows", "tokens": 60.0, "elapsed": 4.0}, {}]
    assert progress.describe(rows) == "6/16 rows, 40 tokens/s, ETA 7 s"
    steps = [{"done": 3, "total": None, "unit": "steps", "samples": 12, "loss": 0.5, "elapsed": 6.0},
             {"done": 3, "total": None, "unit": "steps", "samples": 12, "loss": 0.7, "elapsed": 6.0}]
    assert progress.describe(steps) == "6 steps, 4.00 samples/s, loss 0.6000"
    assert progress.describe([{}, {}]) == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_line_rewrites_one_line_on_a_terminal_and_prints_rarely_to_a_file(monkeypatch):
    tty = _Terminal()
    line = progress.LiveLine("round 1 generate", tty)
    for done in (1, 2, 2, 3):
        line.show([{"done": done, "total": 4, "unit": "rows", "elapsed": 1.0}])
    line.close()
    text = tty.getvalue()
    assert "\n" not in text and text.count("\r\033[K") == 4  # 3 distinct updates in place, then cleared
    assert "round 1 generate: 3/4 rows" in text

    log = io.StringIO()
    monkeypatch.setattr(progress, "NON_TTY_INTERVAL_S", 0.0)
    plain = progress.LiveLine("round 1 train", log)
    plain.show([{"done": 1, "total": 2, "unit": "steps", "elapsed": 1.0}])
    plain.show([{"done": 1, "total": 2, "unit": "steps", "elapsed": 1.0}])  # unchanged: not printed again
    plain.close()
    assert log.getvalue().count("\n") == 1 and "\r" not in log.getvalue()
    monkeypatch.setattr(progress, "ENABLED", False)
    quiet = io.StringIO()
    progress.LiveLine("x", quiet).show([{"done": 1, "total": 2, "unit": "rows", "elapsed": 1.0}])
    assert quiet.getvalue() == ""
