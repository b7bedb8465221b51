"""Read rows of text data from any of the formats w2s accepts, checking required fields as it goes.

Formats: a JSON list of objects, JSON Lines, Parquet, CSV, a folder written by ``datasets.save_to_disk``,
or ``hub:NAME[@REVISION][:CONFIG][#DATA_DIR]`` (a hub dataset, where a hub is reachable). Every row keeps all
its fields; a row without an ``id`` gets its position in the file (JSON list index, JSONL line index,
Parquet/CSV row index), so ids are stable across re-reads and can be used to resume work.

A bad row (missing field, non-string, empty value, malformed JSON line, invalid UTF-8) either stops the
read with a :class:`~w2s.errors.DataError` naming file, line/row and field (``on_bad_row: error``), or is
skipped and counted (``on_bad_row: skip``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2s.errors import DataError

HUB_PREFIX = "hub:"
ID_KEY = "id"


@dataclass
class RowsResult:
    """Rows read from a source.

    Attributes:
        rows: the good rows, every input field kept, plus ``id`` (the row's position) where it had none.
        skipped: how many bad rows were skipped (``on_bad_row: skip``).
        problems: one message per skipped row, naming file, line/row and field.
        source: the resolved file, folder or hub name.
    """

    rows: list[dict[str, Any]]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    source: str = ""


class _BadRow(Exception):
    """One bad row; turned into a DataError or a skip depending on on_bad_row."""


def _source_fields(source: Any) -> tuple[str, str, str, int]:
    """(path, split, on_bad_row, max_rows) from a DataSourceConfig-like object, a mapping or a path."""
    if isinstance(source, (str, os.PathLike)):
        return str(source), "train", "error", 0
    get = source.get if isinstance(source, Mapping) else lambda k, d=None: getattr(source, k, d)
    return str(get("path", "") or ""), str(get("split", "train") or "train"), str(get("on_bad_row", "error")), \
        int(get("max_rows", 0) or 0)


def _line_of_offset(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = _line_of_offset(data, e.start)
        raise _BadRow(f"{path}:line {line}: invalid UTF-8 (byte {e.start})") from None


def _iter_json_list(path: Path) -> Iterator[tuple[str, Any]]:
    raw = path.read_bytes()
    try:
        text = _decode(raw, path)
    except _BadRow as e:
        raise DataError(f"{e}; a JSON list cannot be read past it: fix the file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:line {e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json file must hold a list of objects (or be JSON Lines), got "
                        f"{type(data).__name__}")
    for i, item in enumerate(data):
        yield f"{path}:item {i}", item


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:line {lineno}"
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield where, _BadRow(f"{where}: invalid UTF-8 (byte {e.start} of the line)")
                continue
            try:
                yield where, json.loads(text)
            except json.JSONDecodeError as e:
                yield where, _BadRow(f"{where}: malformed JSON line: {e.msg} (column {e.colno})")


def _iter_csv(path: Path, on_bad_row: str) -> Iterator[tuple[str, Any]]:
    raw = path.read_bytes()
    bad_lines: list[tuple[int, str]] = []
    if on_bad_row == "skip":
        # Drop undecodable lines (and report them) so the rest of the file can still be read.
        kept = []
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
                kept.append(line)
            except UnicodeDecodeError as e:
                bad_lines.append((lineno, f"{path}:line {lineno}: invalid UTF-8 (byte {e.start} of the line)"))
        raw = b"\n".join(kept)
    try:
        text = _decode(raw, path)
    except _BadRow as e:
        raise DataError(str(e)) from None
    for _lineno, msg in bad_lines:
        yield msg, _BadRow(msg)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    for i, row in enumerate(reader):
        where = f"{path}:line {reader.line_num} (row {i})"
        if None in row:  # more cells than header columns
            yield where, _BadRow(f"{where}: {len(header) + len(row[None])} cells but the header has "
                                 f"{len(header)} columns")
            continue
        missing = [k for k, v in row.items() if v is None]
        if missing:  # fewer cells than header columns
            yield where, _BadRow(f"{where}: field {missing[0]!r}: missing cell (the row has fewer cells than the "
                                 f"header's {len(header)} columns)")
            continue
        yield where, row


def _iter_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: cannot read as Parquet: {e}") from None
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", row


def _iter_dataset(ds: Any, label: str) -> Iterator[tuple[str, Any]]:
    for i, row in enumerate(ds):
        yield f"{label}:row {i}", row


def _load_saved(path: Path, split: str) -> Any:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{path}: a folder must be written by datasets.save_to_disk: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path}: no split {split!r}; it has {sorted(ds)} (set the data source's split)")
        ds = ds[split]
    return ds


def parse_hub_spec(spec: str) -> dict[str, str | None]:
    """``hub:NAME[@REVISION][:CONFIG][#DATA_DIR]`` as ``load_dataset`` arguments (e.g. the three rounds of
    PKU-SafeRLHF: ``hub:PKU-Alignment/PKU-SafeRLHF@2d8577a#round0``)."""
    rest, _, data_dir = spec[len(HUB_PREFIX):].partition("#")
    rest, _, config = rest.partition(":")
    name, _, revision = rest.partition("@")
    return {"path": name, "name": config or None, "revision": revision or None, "data_dir": data_dir or None}


def _load_hub(spec: str, split: str) -> Any:
    import datasets

    args = parse_hub_spec(spec)
    name, config = args["path"], args["name"]
    try:
        return datasets.load_dataset(**{k: v for k, v in args.items() if v is not None}, split=split)
    except Exception as e:
        raise DataError(f"{spec}: cannot load hub dataset {name!r} (config {config or 'default'}, split {split!r}): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Without hub access, "
                        "download it elsewhere and point the path at a JSONL/Parquet file or a saved folder.") \
            from None


def _records(path_str: str, split: str, on_bad_row: str) -> tuple[str, Iterator[tuple[str, Any]]]:
    if path_str.startswith(HUB_PREFIX):
        return path_str, _iter_dataset(_load_hub(path_str, split), path_str)
    from w2s.shipped import resolve_path

    path = resolve_path(path_str)
    if not path.exists():
        raise DataError(f"{path_str}: no such file or folder (relative paths are read from the working directory, "
                        "then the repository root)")
    if path.is_dir():
        return str(path), _iter_dataset(_load_saved(path, split), str(path))
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return str(path), _iter_jsonl(path)
    if suffix == ".json":
        with open(path, "rb") as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        return str(path), (_iter_json_list(path) if head.startswith(b"[") else _iter_jsonl(path))
    if suffix in (".parquet", ".pq"):
        return str(path), _iter_parquet(path)
    if suffix == ".csv":
        return str(path), _iter_csv(path, on_bad_row)
    raise DataError(f"{path}: unknown data format {suffix!r}; use .json (a list), .jsonl, .parquet, .csv, a "
                    "datasets.save_to_disk folder or hub:NAME[:CONFIG]")


def _check(where: str, item: Any, required: Mapping[str, str], allow_empty: set[str]) -> dict[str, Any]:
    if isinstance(item, _BadRow):
        raise item
    if not isinstance(item, dict):
        raise _BadRow(f"{where}: expected an object with fields {sorted(required.values())}, got "
                      f"{type(item).__name__}")
    for role, key in required.items():
        if key not in item:
            raise _BadRow(f"{where}: field {key!r} ({role}) is missing; the row has {sorted(item)[:10]}")
        value = item[key]
        if not isinstance(value, str):
            raise _BadRow(f"{where}: field {key!r} ({role}) must be a string, got {type(value).__name__}")
        if not value.strip() and role not in allow_empty and key not in allow_empty:
            raise _BadRow(f"{where}: field {key!r} ({role}) is empty")
    return item


def read_rows(source: Any, *, required: Mapping[str, str] | Sequence[str], what: str,
              allow_empty: Iterable[str] = (), unique_ids: bool = False) -> RowsResult:
    """Read and check rows from a file, a saved dataset folder or a hub dataset.

    Args:
        source: a ``DataSourceConfig`` (``path``, ``split``, ``on_bad_row``, ``max_rows``), a mapping with
            those keys, or a plain path (then ``on_bad_row`` is ``error``).
        required: fields every row must have as non-empty strings: a mapping role -> field name (for
            example ``{"question": cfg.question_key}``) or a list of field names.
        what: what the rows are, for messages (``"Aligner triples"``).
        allow_empty: roles or field names whose value may be an empty string.
        unique_ids: a repeated ``id`` is an error naming both rows (prompts and answers are paired by id).

    Returns:
        The good rows (with ``id`` added where missing), the skipped count and one message per skip.

    Raises:
        DataError: on the first bad row when ``on_bad_row`` is ``error``, or when the source cannot be read.
    """
    path_str, split, on_bad_row, max_rows = _source_fields(source)
    if not path_str:
        raise DataError(f"{what}: no data path given (set the data source's `path`)")
    if on_bad_row not in ("error", "skip"):
        raise DataError(f"{what}: on_bad_row must be error or skip, got {on_bad_row!r}")
    req = dict(required) if isinstance(required, Mapping) else {k: k for k in required}
    empty_ok = set(allow_empty)
    label, records = _records(path_str, split, on_bad_row)
    result = RowsResult(rows=[], source=label)
    first_seen: dict[str, str] = {}  # id -> where it was first read (unique_ids)
    for index, (where, item) in enumerate(records):
        try:
            row = _check(where, item, req, empty_ok)
        except _BadRow as e:
            if on_bad_row == "error":
                raise DataError(f"{what}: {e} (set on_bad_row: skip to skip bad rows)") from None
            result.skipped += 1
            result.problems.append(str(e))
            continue
        if ID_KEY not in row:
            row = {ID_KEY: _position(where, index), **row}
        if unique_ids:
            key = str(row[ID_KEY])
            if key in first_seen:  # rows are paired by id: a repeat would be paired with the wrong one
                raise DataError(f"{what}: {where}: field {ID_KEY!r}: {key!r} was already the id of {first_seen[key]}; "
                                "ids must be unique (rows are paired by id)")
            first_seen[key] = where
        result.rows.append(row)
        if max_rows and len(result.rows) >= max_rows:
            break
    return result


def _position(where: str, index: int) -> int:
    """The row's position in its file: JSONL line index, JSON list index, Parquet/CSV row index."""
    tail = where.rsplit(":", 1)[-1]
    if tail.startswith("line ") and "(row " not in tail:
        return int(tail.split()[1]) - 1
    if "(row " in tail:
        return int(tail.split("(row ")[1].rstrip(")"))
    parts = tail.split()
    return int(parts[1]) if len(parts) == 2 and parts[1].isdigit() else index


def write_jsonl(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSON Lines (UTF-8, one object per line); returns the count."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
