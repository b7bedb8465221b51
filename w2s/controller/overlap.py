"""Evaluation prompts the run also trains on, found before anything starts.

A result on the evaluation prompts stands for unseen prompts only when the loop's prompts and the Aligner's
training questions hold none of them. Texts are compared exactly and after :func:`w2s.data.text.normalize_text`
(case, Unicode form, runs of whitespace). An overlap is an error naming the rows, unless ``eval.allow_overlap``:
then the run goes on with the counts in every evaluation row of ``metrics.jsonl`` and in the report.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from w2s.console import say
from w2s.data.prompts import Prompt
from w2s.errors import DataError

SHOWN = 10  # ids named in the error, per set


def _aligner_questions(cfg: DictConfig) -> list[str] | None:
    """Every question of the triples the run trains its Aligner(s) on (held-out ones too: they chose nothing, but
    sit in the same files); None when the run trains none."""
    from w2s.aligner.dataset import load_triples

    if cfg.aligner.per_round:
        sources = [OmegaConf.merge(cfg.aligner.train.data, {"path": str(p)}) for p in cfg.aligner.per_round]
    elif cfg.aligner.train.enabled:
        sources = [cfg.aligner.train.data]
    else:
        return None
    questions: list[str] = []
    for source in sources:
        split = load_triples(source, eval_fraction=0.0, seed=0)
        questions += [t.question for t in split.train + split.eval]
    return questions


def find_overlap(cfg: DictConfig, loop_prompts: list[Prompt], eval_prompts: list[Prompt]) -> dict[str, Any]:
    """The evaluation prompts' ids found among the loop's prompts and among the Aligner's training questions
    (its triples when the run trains it; else the given Aligner's record of them, when it keeps one)."""
    from w2s.aligner.trained_questions import digest, seen_in_training
    from w2s.assets import resolve_model_path
    from w2s.data.text import normalize_text

    loop = {normalize_text(p.prompt) for p in loop_prompts}
    found: dict[str, Any] = {"loop_prompts": [p.id for p in eval_prompts if normalize_text(p.prompt) in loop]}
    questions = _aligner_questions(cfg)
    if questions is not None:
        trained = {digest(q) for q in questions}
        found["aligner_questions"] = [p.id for p in eval_prompts if digest(p.prompt) in trained]
    elif cfg.model.aligner.path:
        found["aligner_questions"] = seen_in_training(resolve_model_path(str(cfg.model.aligner.path), progress=say),
                                                      [(p.id, p.prompt) for p in eval_prompts])
    return found


def _named(ids: list[str]) -> str:
    return ", ".join(map(str, ids[:SHOWN])) + (", ..." if len(ids) > SHOWN else "")


def check_overlap(cfg: DictConfig, loop_prompts: list[Prompt], eval_prompts: list[Prompt]) -> dict[str, int | None]:
    """Refuse evaluation prompts the run trains on, naming them, unless ``eval.allow_overlap``; the counts (None:
    not known, the Aligner keeps no record of its questions)."""
    found = find_overlap(cfg, loop_prompts, eval_prompts)
    where = {"loop_prompts": "loop.prompts", "aligner_questions": "the Aligner's training questions"}
    hits = {k: ids for k, ids in found.items() if ids}
    if hits and not cfg.eval.allow_overlap:
        parts = [f"{len(ids)} in {where[k]} (ids {_named(ids)})" for k, ids in hits.items()]
        raise DataError(f"eval.prompts: of the {len(eval_prompts)} evaluation prompts, {' and '.join(parts)}: a result "
                        "on them is not a result on unseen prompts. Remove them from one side, or set "
                        "eval.allow_overlap=true to run anyway (the counts go into metrics.jsonl and the report)")
    for k, ids in hits.items():
        say(f"warning: {len(ids)} of the {len(eval_prompts)} evaluation prompts are in {where[k]} "
            "(eval.allow_overlap=true)")
    if found.get("aligner_questions", []) is None:
        say("the Aligner keeps no record of its training questions: whether the evaluation prompts were among them "
            "is not checked")
    return {f"overlap_{k}": (None if ids is None else len(ids)) for k, ids in found.items()}
