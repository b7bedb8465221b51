"""The one way corrections are made and kept: a JSON Lines file that grows chunk by chunk and resumes where it stopped.

``w2s aligner correct`` (:func:`w2s.aligner.correct.correct_file`, ``w2s eval --aligner`` too) and a round's correct
stage (:func:`w2s.controller.round_stages.correct_stage`) both write through :class:`CorrectionFile`:

- Rows are corrected in chunks of fixed boundaries (``chunk`` rows from the first input row), each chunk one call
  of the corrector seeded by the base seed plus its first row's index, and appended in one write, flushed and
  fsynced before the next chunk starts. A kill loses at most the chunk in flight.
- On a restart: a partial last line (a write cut off) is cut; the rows already written must have been corrected
  with the same settings (every row's ``w2s_correction`` is compared on ``must_match``), else the file is refused
  with what differs, or set aside as ``.stale`` (``other_settings="set_aside"``, a run's stage, whose settings are
  its own); rows whose question or answer has changed in the input since are dropped; a chunk that lacks any of its
  rows is corrected again whole, its kept rows dropped first. So every row is what one uninterrupted run over the
  same input writes, byte for byte, and no id is written twice.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from w2s.data.files import atomic_write_text, naming
from w2s.errors import DataError, W2SError

PROVENANCE_KEY = "w2s_correction"
# What decides a correction: rows already written are kept only when each of these equals this run's.
RESUME_KEYS = ("aligner", "weights", "template", "instruction", "generation", "base_seed")


class Corrects(Protocol):
    """What corrects a chunk: an in-process :class:`w2s.aligner.correct.Corrector` or the corrector service
    (:class:`w2s.roles.corrector.ServedCorrector`)."""

    def correct(self, questions: Sequence[str], answers: Sequence[str], *, seed: int | None = None
                ) -> list[Any]: ...


def id_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def scan_output(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Rows already written and the byte length of the whole lines; a partial (unterminated) last line is ignored.

    Raises:
        DataError: a complete line in the middle that is not JSON (the file was edited or is not ours).
    """
    rows: list[dict[str, Any]] = []
    good = 0
    if not path.exists():
        return rows, 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                break  # interrupted write: the caller cuts it off
            try:
                rows.append(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{path}:line {lineno}: not a JSON line ({e}); the output was edited or is not a "
                                "w2s correction file: move it away or choose another --output") from None
            good += len(line)
    return rows, good


@dataclass
class Written:
    """What :meth:`CorrectionFile.write` made: every input row's output row in input order, how many were kept
    from before a stop and how many made now, and the time and tokens of those made now."""

    rows: list[dict[str, Any]]
    resumed: int
    new: int
    seconds: float
    new_tokens: int


class CorrectionFile:
    """The corrections of one input, kept in ``path`` (see the module docstring).

    Args:
        path: the JSON Lines output.
        question_key / answer_key / output_key: the input rows' fields, and the field the correction goes to.
        provenance: what produces the corrections (Aligner, weights, template, instruction, decoding, base seed,
            and whatever else the caller needs kept equal); every row carries it under ``w2s_correction`` with its
            own seed, token counts and finish reason.
        chunk: rows per call of the corrector.
        must_match: the provenance keys rows already written must share with this run to be kept.
        other_settings: ``refuse`` (a :class:`W2SError` naming what differs) or ``set_aside`` (start afresh).
    """

    def __init__(self, path: Path, *, question_key: str, answer_key: str, output_key: str,
                 provenance: Mapping[str, Any], chunk: int, must_match: Sequence[str] = RESUME_KEYS,
                 other_settings: Literal["refuse", "set_aside"] = "refuse"):
        self.path, self.keys = Path(path), (question_key, answer_key)
        self.output_key, self.provenance = output_key, dict(provenance)
        self.chunk, self.must_match, self.other_settings = max(1, int(chunk)), tuple(must_match), other_settings

    def _differences(self, rows: list[dict[str, Any]]) -> dict[str, tuple[Any, Any]]:
        changed: dict[str, tuple[Any, Any]] = {}
        for row in rows:
            old = row.get(PROVENANCE_KEY) or {}
            for key in self.must_match:
                if key not in changed and old.get(key) != self.provenance.get(key):
                    changed[key] = (old.get(key), self.provenance.get(key))
        return changed

    def _set_aside(self, why: str, echo: Any) -> None:
        stale = self.path.with_suffix(".stale")
        os.replace(self.path, stale)
        if echo is not None:
            echo(f"{self.path.name}: {why}; set aside as {stale.name}, corrected afresh")

    def _kept(self, echo: Any) -> list[dict[str, Any]]:
        """The rows written before a stop, the file cut to its whole lines (checked as the docstring says)."""
        try:
            rows, good = scan_output(self.path)
        except DataError as e:
            if self.other_settings == "refuse":
                raise
            self._set_aside(f"not a correction file ({e})", echo)
            return []
        changed = self._differences(rows)
        if changed:
            what = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in changed.items())
            if self.other_settings == "refuse":
                raise W2SError(f"{self.path}: cannot resume: rows there were corrected with other settings ({what}); "
                               "use the same Aligner and settings to resume, or choose another --output (or "
                               "delete the file) to start over")
            self._set_aside(f"corrected with other settings ({what})", echo)
            return []
        if self.path.exists() and self.path.stat().st_size != good:
            with open(self.path, "r+b") as f:  # cut off the partial line an interrupted write left
                f.truncate(good)
        return rows

    def _keep_only(self, rows: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def write(self, corrector: Corrects, rows: Sequence[Mapping[str, Any]], *, base_seed: int,
              progress: bool = False, echo: Any = print) -> Written:
        """Every row of ``rows`` (each with a unique ``id``) corrected into the file: the rows kept from before a
        stop, then each chunk not yet whole, corrected by ``corrector`` with seed ``base_seed`` + its first row."""
        q_key, a_key = self.keys
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = self._kept(echo)
        current = {id_key(r["id"]): r for r in rows}
        changed = [r for r in kept if id_key(r.get("id")) in current
                   and any(r.get(k) != current[id_key(r.get("id"))].get(k) for k in self.keys)]
        done = {id_key(r.get("id")) for r in kept} - {id_key(r.get("id")) for r in changed}
        starts = [s for s in range(0, len(rows), self.chunk)
                  if any(id_key(r["id"]) not in done for r in rows[s:s + self.chunk])]
        redo = {id_key(r["id"]) for s in starts for r in rows[s:s + self.chunk]}
        if changed and echo is not None:
            echo(f"{self.path}: {len(changed)} row(s) changed in the input since they were corrected; correcting "
                 "them again")
        if any(id_key(r.get("id")) in redo for r in kept):  # (a changed row's chunk is redone: it is in redo)
            self._keep_only([r for r in kept if id_key(r.get("id")) not in redo])
        todo = sum(len(rows[s:s + self.chunk]) for s in starts)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(rows), initial=len(rows) - todo, desc="correct", unit="row", dynamic_ncols=True)
        start_time, made, new_tokens = time.perf_counter(), 0, 0
        with naming(self.path), open(self.path, "ab") as f:
            for s in starts:
                batch = list(rows[s:s + self.chunk])
                corrections = corrector.correct([r[q_key] for r in batch], [r[a_key] for r in batch],
                                                seed=base_seed + s)
                lines = []
                for row, corr in zip(batch, corrections, strict=True):
                    prov = {**self.provenance, "seed": base_seed + s, "prompt_tokens": corr.prompt_tokens,
                            "completion_tokens": corr.completion_tokens, "finish_reason": corr.finish_reason,
                            "answer_cut_tokens": corr.answer_cut_tokens}
                    lines.append(json.dumps({**row, self.output_key: corr.text, PROVENANCE_KEY: prov},
                                            ensure_ascii=False))
                    new_tokens += corr.prompt_tokens + corr.completion_tokens
                f.write(("\n".join(lines) + "\n").encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
                made += len(batch)
                if bar is not None:
                    elapsed = max(time.perf_counter() - start_time, 1e-9)
                    bar.update(len(batch))
                    bar.set_postfix(rows_s=f"{made / elapsed:.2f}", tok_s=f"{new_tokens / elapsed:.1f}")
        if bar is not None:
            bar.close()
        by_id = {id_key(r.get("id")): r for r in scan_output(self.path)[0]}
        return Written([by_id[id_key(r["id"])] for r in rows], len(rows) - todo, todo,
                       time.perf_counter() - start_time, new_tokens)
