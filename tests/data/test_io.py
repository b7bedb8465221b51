"""w2s.data.io: every format, every class of bad row, error and skip modes."""

from __future__ import annotations

import json

import pytest

from w2s.data.io import read_rows
from w2s.errors import DataError

REQ = {"question": "question", "answer": "answer"}


def _jsonl(path, lines: list[str | bytes]):
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    return path


def _row(q="q?", a="a."):
    return json.dumps({"question": q, "answer": a})


def test_json_list_keeps_fields_and_adds_ids(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps([{"question": "q1", "answer": "a1", "extra": 1},
                             {"id": "x", "question": "q2", "answer": "a2"}]))
    res = read_rows(p, required=REQ, what="test")
    assert res.rows == [{"id": 0, "question": "q1", "answer": "a1", "extra": 1},
                        {"id": "x", "question": "q2", "answer": "a2"}]
    assert res.skipped == 0 and res.problems == []


def test_jsonl_ids_are_line_positions_and_stable(tmp_path):
    p = _jsonl(tmp_path / "t.jsonl", [_row("q1"), "", _row("q3")])
    res = read_rows(str(p), required=["question", "answer"], what="test")
    assert [r["id"] for r in res.rows] == [0, 2]
    assert read_rows(str(p), required=REQ, what="test").rows == res.rows


def test_json_suffix_holding_jsonl_is_read(tmp_path):
    p = _jsonl(tmp_path / "t.json", [_row("q1"), _row("q2")])
    assert [r["question"] for r in read_rows(p, required=REQ, what="t").rows] == ["q1", "q2"]


@pytest.mark.parametrize("line, field, problem", [
    (json.dumps({"answer": "a"}), "'question'", "missing"),
    (json.dumps({"question": 3, "answer": "a"}), "'question'", "must be a string, got int"),
    (json.dumps({"question": "  ", "answer": "a"}), "'question'", "is empty"),
    (json.dumps({"question": "q", "answer": None}), "'answer'", "must be a string, got NoneType"),
])
def test_jsonl_field_errors_name_file_line_field(tmp_path, line, field, problem):
    p = _jsonl(tmp_path / "bad.jsonl", [_row(), line, _row()])
    with pytest.raises(DataError) as e:
        read_rows(p, required=REQ, what="triples")
    msg = str(e.value)
    assert f"{p}:line 2" in msg and field in msg and problem in msg and "on_bad_row" in msg
    res = read_rows({"path": str(p), "on_bad_row": "skip"}, required=REQ, what="triples")
    assert res.skipped == 1 and len(res.rows) == 2 and "line 2" in res.problems[0]


def test_malformed_jsonl_line(tmp_path):
    p = _jsonl(tmp_path / "bad.jsonl", [_row(), _row(), '{"question": "q", "answer": '])
    with pytest.raises(DataError, match=r"bad\.jsonl:line 3: malformed JSON line"):
        read_rows(p, required=REQ, what="triples")
    assert read_rows({"path": str(p), "on_bad_row": "skip"}, required=REQ, what="t").skipped == 1


def test_invalid_utf8_jsonl_line(tmp_path):
    p = _jsonl(tmp_path / "bad.jsonl", [_row(), b'{"question": "caf\xe9", "answer": "a"}'])
    with pytest.raises(DataError, match=r"bad\.jsonl:line 2: invalid UTF-8"):
        read_rows(p, required=REQ, what="triples")
    res = read_rows({"path": str(p), "on_bad_row": "skip"}, required=REQ, what="t")
    assert res.skipped == 1 and [r["id"] for r in res.rows] == [0]


def test_json_list_errors(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(json.dumps([{"question": "q", "answer": "a"}, {"question": "q", "answer": ["a"]}]))
    with pytest.raises(DataError, match=r"t\.json:item 1: field 'answer' \(answer\) must be a string, got list"):
        read_rows(p, required=REQ, what="t")
    p.write_bytes(b'[{"question": "q", "answer": "a"},\n{"question": "\xff", "answer": "a"}]')
    with pytest.raises(DataError, match=r"t\.json:line 2: invalid UTF-8"):
        read_rows(p, required=REQ, what="t")
    p.write_text('[{"question": "q",\n "answer": }]')
    with pytest.raises(DataError, match=r"t\.json:line 2: not valid JSON"):
        read_rows(p, required=REQ, what="t")


def test_csv_rows_and_errors(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('question,answer\n"multi\nline q",a1\nq2,a2,extra\nq3\n,a4\nq5,a5\n')
    with pytest.raises(DataError, match=r"t\.csv:line 4 \(row 1\): 3 cells"):
        read_rows(p, required=REQ, what="t")
    res = read_rows({"path": str(p), "on_bad_row": "skip"}, required=REQ, what="t")
    assert [r["question"] for r in res.rows] == ["multi\nline q", "q5"]
    assert [r["id"] for r in res.rows] == [0, 4]
    assert res.skipped == 3
    assert any("line 5 (row 2): field 'answer'" in m and "missing cell" in m for m in res.problems)
    assert any("line 6 (row 3): field 'question' (question) is empty" in m for m in res.problems)


def test_csv_invalid_utf8(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes(b"question,answer\nq1,a1\nq\xff,a2\nq3,a3\n")
    with pytest.raises(DataError, match=r"t\.csv:line 3: invalid UTF-8"):
        read_rows(p, required=REQ, what="t")
    res = read_rows({"path": str(p), "on_bad_row": "skip"}, required=REQ, what="t")
    assert [r["question"] for r in res.rows] == ["q1", "q3"] and res.skipped == 1


def test_parquet_rows_and_bad_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"question": ["q0", None, "q2"], "answer": ["a0", "a1", "a2"], "n": [1, 2, 3]}), p)
    with pytest.raises(DataError, match=r"t\.parquet:row 1: field 'question' \(question\) must be a string"):
        read_rows(p, required=REQ, what="t")
    res = read_rows({"path": str(p), "on_bad_row": "skip", "max_rows": 0}, required=REQ, what="t")
    assert [(r["id"], r["n"]) for r in res.rows] == [(0, 1), (2, 3)] and res.skipped == 1


def test_saved_dataset_folder_and_split(tmp_path):
    import datasets

    d = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"question": "q", "answer": "a"}]),
                              "test": datasets.Dataset.from_list([{"question": "tq", "answer": ""}])})
    d.save_to_disk(str(tmp_path / "ds"))
    assert read_rows(str(tmp_path / "ds"), required=REQ, what="t").rows == [{"id": 0, "question": "q",
                                                                              "answer": "a"}]
    with pytest.raises(DataError, match=r"ds:row 0: field 'answer' \(answer\) is empty"):
        read_rows({"path": str(tmp_path / "ds"), "split": "test"}, required=REQ, what="t")
    res = read_rows({"path": str(tmp_path / "ds"), "split": "test"}, required=REQ, what="t", allow_empty=["answer"])
    assert res.rows[0]["answer"] == ""
    with pytest.raises(DataError, match="no split 'dev'"):
        read_rows({"path": str(tmp_path / "ds"), "split": "dev"}, required=REQ, what="t")


def test_max_rows_missing_file_unknown_format_and_offline_hub(tmp_path):
    p = _jsonl(tmp_path / "t.jsonl", [_row(f"q{i}") for i in range(5)])
    assert len(read_rows({"path": str(p), "max_rows": 2}, required=REQ, what="t").rows) == 2
    with pytest.raises(DataError, match="no such file"):
        read_rows(tmp_path / "nope.jsonl", required=REQ, what="t")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(DataError, match="unknown data format '.txt'"):
        read_rows(tmp_path / "t.txt", required=REQ, what="t")
    with pytest.raises(DataError, match="cannot load hub dataset 'nobody/none'.*Without hub access"):
        read_rows("hub:nobody/none:general", required=REQ, what="t")
