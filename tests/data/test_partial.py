"""A stage's rows kept chunk by chunk: a rerun keeps whole chunks, remakes a chunk cut off by a kill whole, and never
mixes in rows made from other inputs."""

from __future__ import annotations

from w2s.data.partial import PartialRows

ITEMS = [f"prompt {i}" for i in range(7)]


def _maker(calls: list[int], fail_at: int | None = None):
    def make(start: int, items: list[str]) -> list[dict]:
        calls.append(start)
        if start == fail_at:
            raise RuntimeError("killed")
        return [{"item": it, "made_at": start} for it in items]

    return make


def test_a_rerun_makes_only_the_chunks_not_yet_made_and_ends_as_an_uninterrupted_run(tmp_path):
    whole, _ = PartialRows(tmp_path / "a.partial.jsonl", "fp", 3).make(ITEMS, _maker([]), what="t")
    path = tmp_path / "b.partial.jsonl"
    calls = []
    try:
        PartialRows(path, "fp", 3).make(ITEMS, _maker(calls, fail_at=6), what="t")
    except RuntimeError:
        pass
    assert calls == [0, 3, 6]
    calls = []
    rows, resumed = PartialRows(path, "fp", 3).make(ITEMS, _maker(calls), what="t")
    assert (calls, resumed) == ([6], 6) and rows == whole


def test_a_chunk_cut_off_by_a_kill_is_made_again_whole(tmp_path):
    path = tmp_path / "c.partial.jsonl"
    PartialRows(path, "fp", 3).make(ITEMS[:6], _maker([]), what="t")
    data = path.read_bytes()
    path.write_bytes(data[:-20])  # the second chunk's line, torn
    calls = []
    rows, resumed = PartialRows(path, "fp", 3).make(ITEMS[:6], _maker(calls), what="t")
    assert (calls, resumed) == ([3], 3) and [r["item"] for r in rows] == ITEMS[:6]
    assert path.read_bytes() == data  # the torn line cut, the chunk written again in its place


def _stopped_after_one_chunk(path) -> None:
    try:
        PartialRows(path, "fp", 3).make(ITEMS, _maker([], fail_at=3), what="t")
    except RuntimeError:
        pass


def test_rows_made_from_other_inputs_or_settings_are_set_aside(tmp_path):
    path = tmp_path / "d.partial.jsonl"
    for fingerprint, chunk, items in (("other", 3, ITEMS), ("fp", 2, ITEMS), ("fp", 3, ITEMS[::-1])):
        _stopped_after_one_chunk(path)
        calls = []
        rows, resumed = PartialRows(path, fingerprint, chunk).make(items, _maker(calls), what="t")
        assert resumed == 0 and calls[0] == 0, (fingerprint, chunk)  # nothing kept: made from the first row
        assert [r["item"] for r in rows] == items
        assert (tmp_path / "d.partial.stale").exists()
        PartialRows(path, fingerprint, chunk).remove()
    assert not path.exists()
