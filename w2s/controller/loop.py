"""The weak-to-strong rounds, driven from one place.

Round k: the strong policy answers a slice of prompts (generate), the weak Aligner corrects the answers
(correct), the corrections become training data (data: SFT rows, or correction > answer pairs for DPO and
the reward model), the policy is trained from the previous round's policy (train), and the new policy is
compared with the previous and the initial one on held-out prompts (eval). Each stage is declared in
:mod:`w2s.stages` and run by :meth:`w2s.rundir.RunDir.run`; its work is a function over the run's context (the round's
stages in :mod:`w2s.controller.round_stages`, the Aligner's in ``aligners``, evaluation's in ``evaluation``, the
ceiling track's in ``ceiling``); :class:`Loop` orders them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from w2s.console import say
from w2s.controller import aligners, evaluation
from w2s.controller.ceiling import ceiling_eval, ceiling_round
from w2s.controller.context import RunContext
from w2s.controller.overlap import check_overlap
from w2s.controller.round_stages import correct_stage, data_stage, generate_stage, train_stage
from w2s.data.prompts import Prompt, read_prompts
from w2s.errors import DataError
from w2s.rundir import RunDir

if TYPE_CHECKING:
    from w2s.roles import Services

log = logging.getLogger("w2s")


def round_slices(prompts: list[Prompt], cfg: DictConfig) -> list[list[Prompt]]:
    """Each round's prompts: one seeded shuffle, then disjoint slices (or repeats when allowed)."""
    rounds, per_round = int(cfg.loop.rounds), int(cfg.loop.prompts_per_round) or len(prompts)
    order = list(prompts)
    random.Random(cfg.run.seed).shuffle(order)
    if per_round * rounds > len(order) and not cfg.loop.repeat_prompts and per_round != len(prompts):
        raise DataError(f"loop.prompts: {len(order)} prompts cannot give {rounds} rounds x "
                        f"loop.prompts_per_round={per_round} without repeats; lower loop.prompts_per_round to "
                        f"{len(order) // rounds}, or set loop.repeat_prompts=true")
    return [[order[(k * per_round + i) % len(order)] for i in range(per_round)] for k in range(rounds)]


@dataclass
class LoopInputs:
    slices: list[list[Prompt]]
    eval_prompts: list[Prompt]
    overlap: dict[str, int | None] = field(default_factory=dict)  # eval prompts the run trains on (allowed)


def preflight(cfg: DictConfig) -> LoopInputs:
    """Read and check every prompt file before any actor starts (bad rows name file, line and field)."""
    prompts = read_prompts(cfg.loop.prompts, with_reference=bool(cfg.loop.ceiling), what="loop.prompts", echo=say)
    slices = round_slices(prompts, cfg)
    eval_prompts: list[Prompt] = []
    if cfg.eval.enabled:
        embedding = any(j.enabled and j.kind == "embedding" for j in cfg.eval.judges.values())
        eval_prompts = read_prompts(cfg.eval.prompts, with_reference=embedding, what="eval.prompts", echo=say)
        if cfg.eval.max_prompts:
            eval_prompts = eval_prompts[: cfg.eval.max_prompts]
    say(f"prompts: {sum(map(len, slices))} over {len(slices)} round(s); {len(eval_prompts)} evaluation prompts")
    overlap = check_overlap(cfg, [p for s in slices for p in s], eval_prompts) if eval_prompts else {}
    return LoopInputs(slices, eval_prompts, overlap)


# ----------------------------------------------------------------------------------------------- the driver
class Loop(RunContext):
    """The rounds over the run's role services (:class:`w2s.roles.Services`), which keep every model loaded."""

    def __init__(self, cfg: DictConfig, rd: RunDir, services: Services | None = None):
        super().__init__(cfg, rd, services)
        self.aligner_heldout: Path | None = None  # the trained Aligner's held-out triples

    # -- stages
    def aligner_stage(self, *, force: bool = False) -> str:
        """The Aligner used for every round (see :func:`w2s.controller.aligners.aligner_stage`)."""
        aligner, self.aligner_heldout = aligners.aligner_stage(self, force=force)
        return aligner

    def round_aligner_stage(self, k: int, previous: str) -> str:
        """Round k's own Aligner (see :func:`w2s.controller.aligners.round_aligner_stage`)."""
        aligner, self.aligner_heldout = aligners.round_aligner_stage(self, k, previous)
        return aligner

    def run(self, inputs: LoopInputs) -> list[dict[str, Any]]:
        from w2s.assets import resolve_model_path

        cfg = self.cfg
        slices, eval_prompts = inputs.slices, inputs.eval_prompts
        self.eval_overlap = dict(inputs.overlap)
        per_round = bool(cfg.aligner.per_round)  # Aligner_k trained on round k's data (the paper's §4)
        aligner = "" if per_round else self.aligner_stage()
        if cfg.eval.enabled and cfg.eval.aligner and cfg.aligner.train.enabled and not per_round:
            self.aligner_eval(aligner, None)
        initial = resolve_model_path(cfg.model.strong.path, progress=say)
        policy, policy_label = initial, "initial"
        summaries: list[dict[str, Any]] = []
        evals: dict[str, list[dict[str, Any]]] = {}  # each policy's answers on the evaluation prompts, scored
        if cfg.eval.enabled:
            evals["initial"] = evaluation.eval_answers(self, 0, "initial", initial, eval_prompts)
            if cfg.eval.aligner and aligner:
                evaluation.aligner_eval_prompts(self, aligner, evals["initial"], eval_prompts)

        ceiling = initial  # loop.ceiling: the same policy trained on gold references (w2s.controller.ceiling)
        for k, round_prompts in enumerate(slices, start=1):
            say(f"===== round {k}/{len(slices)}: {len(round_prompts)} prompts, policy {policy_label} =====")
            if per_round:
                aligner = self.round_aligner_stage(k, aligner)
                if cfg.eval.enabled and cfg.eval.aligner:
                    self.aligner_eval(aligner, k)
            answers = generate_stage(self, k, policy, round_prompts)
            self.services.generator.replaced_next()  # it answers next with the policy this round trains
            corrections = correct_stage(self, k, aligner, answers)
            if per_round and k < len(slices):
                self.services.corrector.replaced_next()  # it corrects next with Aligner_{k+1}
            data = data_stage(self, k, corrections)
            new_policy = train_stage(self, k, policy, initial, data)
            label = f"round-{k}"
            if cfg.eval.enabled:
                evals[label] = evaluation.eval_answers(self, k, label, new_policy, eval_prompts)
                summaries.append(evaluation.compare_stage(self, k, label, policy_label, evals, eval_prompts))
            if cfg.loop.ceiling:
                ceiling = ceiling_round(self, k, round_prompts, ceiling, initial)
                if cfg.eval.enabled:
                    summaries[-1]["ceiling"] = ceiling_eval(self, k, ceiling, evals, eval_prompts)
            policy, policy_label = new_policy, label
        say(f"final policy: {policy}")
        return summaries

    def aligner_eval(self, aligner: str, k: int | None) -> dict[str, Any] | None:
        """The Aligner's own effect: its corrections of held-out answers (unseen questions) against them."""
        if self.aligner_heldout is None:
            say("aligner eval: the Aligner's stage recorded no held-out triples; skipped")
            return None
        return evaluation.aligner_eval_stage(self, aligner, self.aligner_heldout, k)
