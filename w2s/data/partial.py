"""A stage's rows kept chunk by chunk while it works, so that a stage killed half-way resumes from what it made.

The loop's generate stage makes its rows (its correct stage, the same way, through the one correction path:
:mod:`w2s.aligner.correction_file`) in chunks of fixed boundaries (``chunk`` rows from row 0),
each chunk one call to the role services, seeded by its first row. Each finished chunk is appended to
``NAME.partial.jsonl`` in the stage folder as one line, fsynced, before the next starts. A rerun of the unfinished
stage keeps the chunks found there and makes only the rest: a kill loses at most the chunk in flight, and every
chunk is made exactly as an uninterrupted run makes it (a chunk cut off by the kill is made again whole), so the
stage's output is the same byte for byte. The file's first line records what its rows were made from (the stage's
fingerprint: its config values and the contents of its inputs; the items themselves and the chunk size); a file
made from anything else is set aside, never mixed in. When the stage finishes, its output is written whole and the
file removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from w2s.console import say


class PartialRows:
    """The chunks of one stage's rows made so far (see the module docstring).

    Args:
        path: ``NAME.partial.jsonl`` in the stage folder.
        fingerprint: what the rows are made from; a file recording another is set aside.
        chunk: rows per chunk.
    """

    def __init__(self, path: Path, fingerprint: str, chunk: int):
        self.path, self.chunk, self.fingerprint = Path(path), max(1, int(chunk)), fingerprint
        self.header: dict[str, Any] = {}

    def _kept(self) -> list[dict[str, Any]]:
        """The rows of every whole chunk written before a stop, in order (none when there is no file, or when it
        was made from anything else: then it is set aside as ``.stale``). A line cut off by a kill is dropped."""
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if header != self.header:
            stale = self.path.with_suffix(".stale")
            os.replace(self.path, stale)
            say(f"{self.path.name}: made from other inputs or settings; set aside as {stale.name}, made afresh")
            return []
        rows: list[dict[str, Any]] = []
        good = len(lines[0]) + 1
        for index, line in enumerate(lines[1:]):
            try:
                chunk = json.loads(line)
            except ValueError:
                break  # the last line, cut off by the kill (or empty: the end of the file)
            if chunk.get("chunk") != index:
                break
            rows += chunk["rows"]
            good += len(line) + 1
        with open(self.path, "r+b") as f:  # what follows the last whole chunk goes: the next append starts clean
            f.truncate(good)
        return rows

    def append(self, index: int, rows: list[dict[str, Any]]) -> None:
        """Chunk ``index``'s rows, on disk before this returns."""
        new = not self.path.exists()
        with open(self.path, "ab") as f:
            if new:
                f.write((json.dumps(self.header) + "\n").encode("utf-8"))
            f.write((json.dumps({"chunk": index, "rows": rows}, ensure_ascii=False) + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def make(self, items: list[Any], make_chunk: Callable[[int, list[Any]], list[dict[str, Any]]], *,
             what: str) -> tuple[list[dict[str, Any]], int]:
        """Every item's row: the kept chunks', then ``make_chunk(first_row, items)`` for each chunk not yet made.
        Returns the rows and how many were kept from before a stop."""
        digest = hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()
        self.header = {"w2s_partial": self.fingerprint, "chunk": self.chunk, "items": digest}
        rows = self._kept()
        resumed = len(rows)
        if resumed:
            say(f"{what}: {resumed} of {len(items)} rows kept from before the stop ({self.path.name})")
        for start in range(resumed, len(items), self.chunk):
            made = make_chunk(start, items[start:start + self.chunk])
            self.append(start // self.chunk, made)
            rows += made
        return rows, resumed

    def remove(self) -> None:
        """The stage's output is written: the chunks are no longer needed."""
        self.path.unlink(missing_ok=True)


def rows_per_call(sampling: Any, role: Any) -> int:
    """A chunk: one batch for every actor of the role (``batch_prompts_per_actor`` x ``num_actors``)."""
    return max(1, int(sampling.batch_prompts_per_actor)) * max(1, int(role.num_actors))
