"""Aligner training data: triples -> deterministic train/eval split, identity warm-up rows, duplicate report."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from w2s.data.io import read_rows
from w2s.data.text import duplicate_groups


@dataclass
class Triple:
    """One (question, answer, correction) example; ``id`` and the source row are kept for reports."""

    id: Any
    question: str
    answer: str
    correction: str
    identity: bool = False  # a preference row kept as an identity row for the warm-up (answer == correction)


@dataclass
class TripleSplit:
    """Triples read and split for Aligner training.

    Attributes:
        train / eval: the split (deterministic given the seed).
        skipped / problems: bad rows skipped while reading.
        duplicates: groups of ids whose questions are equal after normalisation.
        sha256: hash of the triples' content (order-independent of the file format) for the metadata.
        source: where they came from.
    """

    train: list[Triple]
    eval: list[Triple]
    skipped: int = 0
    problems: list[str] = field(default_factory=list)
    duplicates: list[list[Any]] = field(default_factory=list)
    sha256: str = ""
    source: str = ""

    def report(self) -> dict[str, Any]:
        return {"source": self.source, "train": len(self.train), "eval": len(self.eval), "skipped": self.skipped,
                "problems": self.problems[:20], "duplicate_question_groups": len(self.duplicates),
                "duplicate_question_rows": sum(len(g) for g in self.duplicates),
                "duplicate_examples": self.duplicates[:10], "sha256": self.sha256}


def triples_sha256(triples: Sequence[Triple]) -> str:
    """SHA-256 of the triples' text, in order (same content from any file format gives the same hash)."""
    h = hashlib.sha256()
    for t in triples:
        h.update(json.dumps([t.question, t.answer, t.correction], ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def split_indices(questions: Sequence[str], eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic (train, eval) index lists that hold out whole questions: rows whose questions are equal after
    :func:`~w2s.data.text.normalize_text` stay on one side, so the held-out split measures the Aligner on questions
    it never saw.

    Questions are shuffled by ``seed`` and held out until at least ``round(n * eval_fraction)`` rows are (so a
    file with few, repeated questions holds out more rows than the fraction). At least one question stays in
    train; with ``eval_fraction > 0`` and two or more questions at least one is held out. Each list is returned in
    file order.
    """
    from w2s.data.text import normalize_text

    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    groups: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        groups.setdefault(normalize_text(q), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    target = int(round(len(questions) * eval_fraction))
    if eval_fraction > 0 and len(order) >= 2:
        target = max(1, target)
    held: list[int] = []
    for group in order[:-1]:  # the last question always trains
        if len(held) >= target:
            break
        held += group
    held_set = set(held)
    return [i for i in range(len(questions)) if i not in held_set], sorted(held)


def load_triples(data_cfg: Any, *, eval_fraction: float, seed: int) -> TripleSplit:
    """Read, check and split the triples named by a ``TripleDataConfig``.

    Raises:
        DataError: a bad row (with ``on_bad_row: error``) or no usable rows.
    """
    from w2s.errors import DataError

    q, a, c = data_cfg.question_key, data_cfg.answer_key, data_cfg.correction_key
    if data_cfg.format == "preference":
        from w2s.aligner.preference import preference_to_triple

        result = read_rows(data_cfg, required={"question": q}, what="Aligner preference rows")
        triples = [Triple(row["id"], *preference_to_triple(row, data_cfg, f"{result.source}: row {row['id']}"))
                   for row in result.rows]
    else:
        result = read_rows(data_cfg, required={"question": q, "answer": a, "correction": c}, what="Aligner triples",
                           allow_empty=())
        triples = [Triple(row["id"], row[q], row[a], row[c]) for row in result.rows]
    if not triples:
        raise DataError(f"Aligner triples: {result.source}: no usable rows ({result.skipped} skipped)")
    train_idx, eval_idx = split_indices([t.question for t in triples], eval_fraction, seed)
    groups = duplicate_groups(t.question for t in triples)
    return TripleSplit(train=[triples[i] for i in train_idx], eval=[triples[i] for i in eval_idx],
                       skipped=result.skipped, problems=result.problems,
                       duplicates=[[triples[i].id for i in g] for g in groups], sha256=triples_sha256(triples),
                       source=result.source)


def warmup_subset(train: Sequence[Triple], fraction: float, seed: int) -> list[Triple]:
    """The identity warm-up rows: the identity rows of a preference dataset, plus a seeded ``fraction`` of the
    correction rows, each with the answer as its own target."""
    identity = [t for t in train if t.identity]
    corrections = [t for t in train if not t.identity]
    if fraction <= 0 or not corrections:
        return identity
    n = max(1, int(round(len(corrections) * min(fraction, 1.0))))
    chosen = sorted(random.Random(seed + 1).sample(range(len(corrections)), n))
    return identity + [Triple(corrections[i].id, corrections[i].question, corrections[i].answer,
                              corrections[i].answer) for i in chosen]
