"""Every stage of a run, declared once, in the order they run.

A stage is a folder of the run directory (``round-KK/<name>`` or ``<name>``) with a manifest. Its declaration says
which config sections it depends on (as fine-grained as the truth: a round's prompts depend on the prompt file, the
per-round count and the seed, not on ``loop.rounds``, so a finished run grows by a round), which outputs its manifest
records, and whether it writes a row of ``metrics.jsonl`` under its name (evaluation stages write one row per judge,
``<name>/<judge>``). :meth:`w2s.rundir.RunDir.run` is the one runner: finished check, manifest, metrics row, resume.
The order below is the order of ``metrics.jsonl``: a fork that redoes a stage drops the rows of that stage and of
every stage after it (``eval-vs-*`` comparison rows close their round), and the redone stages write them again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One stage: its ``name``, the config ``keys`` whose change makes it stale, the ``outputs`` its manifest must
    record, and whether its metrics make a row of ``metrics.jsonl`` (``metrics_row``)."""

    name: str
    keys: tuple[str, ...]
    outputs: tuple[str, ...]
    metrics_row: bool = True


# Evaluation answers depend on the prompts and the decoding, not on the judges: a judge added to a finished run
# scores the kept answers (each score is stored with its judge's fingerprint, see w2s.controller.evaluation).
KEYS_EVAL_ANSWERS = ("eval.prompts", "eval.max_prompts", "eval.generate")
KEYS_BASELINE = ("model.strong", "run.seed", *KEYS_EVAL_ANSWERS)
KEYS_ALIGNER = ("model.aligner", "aligner", "run.seed")
# A round's prompts are slice k of one seeded order of the prompt file, whatever the number of rounds: raising
# loop.rounds on a finished run runs the new rounds only (loop.repeat_prompts only lifts a check).
KEYS_GENERATE = ("model.strong", "generate", "loop.prompts", "loop.prompts_per_round", "run.seed")
KEYS_CORRECT = (*KEYS_GENERATE, "model.aligner", "aligner", "correct")
KEYS_DATA = (*KEYS_CORRECT, "loop.on_truncated", "train.method", "train.dpo.min_pair_distance",
             "train.dpo.pair_source", "train.dpo.extra_pairs", "train.dpo.extra_pairs_per_round")
KEYS_TRAIN = (*KEYS_CORRECT, "train")
KEYS_EVAL = (*KEYS_TRAIN, *KEYS_EVAL_ANSWERS)
KEYS_POPALIGN = ("popalign", "model.strong", "model.aligner", "correct", "aligner.templates", "run.seed")

# Before the rounds (and, with aligner.per_round, first in each round): the Aligner and its own evaluation.
ALIGNER = Stage("aligner", KEYS_ALIGNER, ("model",))
ALIGNER_EVAL = Stage("aligner-eval", (*KEYS_ALIGNER, "correct"), ("corrections",), metrics_row=False)
ALIGNER_EVAL_PROMPTS = Stage("aligner-eval-prompts", (*KEYS_ALIGNER, "correct", *KEYS_BASELINE), ("corrections",),
                             metrics_row=False)
# The popalign job (no rounds).
POPALIGN = Stage("popalign", KEYS_POPALIGN, ("popalign", "train"))
POPALIGN_TRAIN = Stage("popalign-train", (*KEYS_POPALIGN, "train.dpo"), ("policy",))
# A round.
GENERATE = Stage("generate", KEYS_GENERATE, ("answers",))
CORRECT = Stage("correct", KEYS_CORRECT, ("corrections",))
DATA = Stage("data", KEYS_DATA, ("train",))
TRAIN = Stage("train", KEYS_TRAIN, ("policy",))
EVAL_ANSWERS = Stage("eval-answers", KEYS_EVAL, ("answers",), metrics_row=False)
# The initial policy's evaluation answers (round 0): the same stage, depending on the initial policy alone.
BASELINE_ANSWERS = Stage("eval-answers", KEYS_BASELINE, ("answers",), metrics_row=False)
# The ceiling track (loop.ceiling), after the round: the same policy trained the same way on the prompts' gold
# references instead of the Aligner's corrections (w2s.controller.ceiling). It depends on no Aligner setting.
KEYS_CEILING_DATA = (*KEYS_GENERATE, "loop.on_truncated", "train.method", "train.dpo.min_pair_distance")
CEILING_GENERATE = Stage("ceiling-generate", KEYS_GENERATE, ("answers",))
CEILING_DATA = Stage("ceiling-data", KEYS_CEILING_DATA, ("train",))
CEILING_TRAIN = Stage("ceiling-train", (*KEYS_CEILING_DATA, "train"), ("policy",))
CEILING_ANSWERS = Stage("ceiling-eval-answers", (*KEYS_CEILING_DATA, "train", *KEYS_EVAL_ANSWERS), ("answers",),
                        metrics_row=False)

STAGES = (ALIGNER, ALIGNER_EVAL, ALIGNER_EVAL_PROMPTS, POPALIGN, POPALIGN_TRAIN, GENERATE, CORRECT, DATA, TRAIN,
          EVAL_ANSWERS, CEILING_GENERATE, CEILING_DATA, CEILING_TRAIN, CEILING_ANSWERS)
RUN_ORDER = tuple(s.name for s in STAGES)
