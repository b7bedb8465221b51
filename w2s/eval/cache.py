"""An on-disk cache of judge outputs, so that an interrupted evaluation resumes without asking (or paying) twice.

One JSON line per judgement, keyed by a hash of everything that decides it: the judge's identity (model, endpoint,
decoding), the rendered messages (the judge prompt, the question, both answers and their order). Lines are
appended and flushed as judgements arrive; a torn last line (a killed process) is ignored on load. One process
writes a cache at a time (a lock beside it).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from w2s.data.files import WriterLock, naming


def cache_key(judge_identity: Any, messages: Any) -> str:
    blob = json.dumps([judge_identity, messages], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgementCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = WriterLock(self.path.with_name(f".{self.path.name}.lock"), f"judge cache {self.path}").acquire()
        self._entries: dict[str, str] = {}
        good = 0
        if self.path.exists():
            with open(self.path, "rb") as f:
                for raw in f:
                    try:
                        row = json.loads(raw)
                        self._entries[row["key"]] = row["text"]
                    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                        break  # a torn last line: everything after it is rewritten
                    good += len(raw)
            if good != self.path.stat().st_size:
                os.truncate(self.path, good)
        self._file = open(self.path, "a", encoding="utf-8")
        self._write = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> str | None:
        return self._entries.get(key)

    def put(self, key: str, text: str) -> None:
        with self._write:
            self._entries[key] = text
            with naming(self.path):
                self._file.write(json.dumps({"key": key, "text": text}, ensure_ascii=False) + "\n")
                self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._lock.release()

    def __enter__(self) -> JudgementCache:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
