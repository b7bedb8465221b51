"""Which questions an Aligner was trained on, kept in its folder, so that an evaluation of it on those very
questions is caught wherever the Aligner goes.

Training writes ``w2s_trained_questions.txt``: one line per distinct question of its training split (the warm-up
rows are a subset of it; the held-out split is not there), each the first 16 hex digits of the SHA-256 of the
question as :func:`w2s.data.text.normalize_text` writes it (case, Unicode form and runs of whitespace do not hide a
repeat). Hashes, not text: the file says nothing of the data beyond whether a given question was in it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

FILE = "w2s_trained_questions.txt"


def digest(question: str) -> str:
    from w2s.data.text import normalize_text

    return hashlib.sha256(normalize_text(question).encode("utf-8")).hexdigest()[:16]


def write(aligner_dir: Path, questions: Iterable[str]) -> None:
    from w2s.data.files import atomic_write_text

    atomic_write_text(Path(aligner_dir) / FILE, "".join(f"{d}\n" for d in sorted({digest(q) for q in questions})))


def seen_in_training(aligner_path: str, prompts: Sequence[tuple[str, str]]) -> list[str] | None:
    """The ids of ``prompts`` (id, text) whose text the Aligner at ``aligner_path`` was trained on; None when it
    records no training questions (trained before w2s kept them, or not by w2s)."""
    path = Path(aligner_path) / FILE
    if not path.is_file():
        return None
    trained = set(path.read_text(encoding="utf-8").split())
    return [i for i, text in prompts if digest(text) in trained]
