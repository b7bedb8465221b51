"""The ceiling track and the performance gap recovered (PGR), for generative weak-to-strong (``loop.ceiling``).

Burns et al. (2023) measure how much of the gap between a weak supervisor and a strong model trained on ground
truth the weak supervision recovers: PGR = (weak-to-strong - weak floor) / (strong ceiling - weak floor). Their
code, and EleutherAI's, is for classification; here every quantity is an omega against the same baseline, the
initial policy's answers to the evaluation prompts, by the same judge:

* **weak-to-strong**: round k's policy (trained on the Aligner's corrections) against the initial one;
* **floor**: the weak side's own quality there: the Aligner's corrections of the initial policy's answers against
  those answers (the ``aligner-eval-prompts`` stage);
* **ceiling**: the same policy trained the same way (method, section, seeds, KL anchor, one more round each round)
  on the prompts' gold references (their ``reference`` field) instead of the corrections, against the initial one.

PGR is 1 when weak supervision is as good as gold, 0 when it adds nothing over the weak side itself. Its 95% CI
resamples the prompts, all three outcomes of a prompt together; a resample whose ceiling does not beat its floor has
no PGR and is left out (the row says how many were).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from w2s.console import say
from w2s.controller.context import RunContext
from w2s.controller.round_stages import generate_stage, prompt_format, train_stage
from w2s.data.files import write_jsonl
from w2s.eval.stats import outcome_values
from w2s.rundir import StageRecord
from w2s.stages import CEILING_ANSWERS, CEILING_DATA, CEILING_GENERATE, CEILING_TRAIN

if TYPE_CHECKING:
    from w2s.data.prompts import Prompt

def pgr(w2s: Sequence[int], floor: Sequence[int], ceiling: Sequence[int]) -> float:
    """(omega_w2s - omega_floor) / (omega_ceiling - omega_floor) of per-prompt outcomes (+1, 0, -1); nan when the
    ceiling does not beat the floor."""
    means = [sum(v) / len(v) for v in (w2s, floor, ceiling)]
    gap = means[2] - means[1]
    return (means[0] - means[1]) / gap if gap > 0 else math.nan


def pgr_with_ci(w2s: Sequence[int], floor: Sequence[int], ceiling: Sequence[int], *, resamples: int = 2000,
                seed: int = 0) -> dict[str, Any]:
    """PGR and its percentile-bootstrap 95% CI over prompts (the three outcome lists are paired by prompt)."""
    import numpy as np

    values = np.asarray([w2s, floor, ceiling], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[:, rng.integers(0, values.shape[1], size=(resamples, values.shape[1]))].mean(axis=2)
    gap = means[2] - means[1]
    ok = gap > 0
    draws = (means[0][ok] - means[1][ok]) / gap[ok]
    low, high = (np.percentile(draws, [2.5, 97.5]) if len(draws) else (math.nan, math.nan))
    return {"pgr": pgr(w2s, floor, ceiling), "pgr_ci_low": float(low), "pgr_ci_high": float(high),
            "omega_w2s": 100.0 * float(values[0].mean()), "omega_floor": 100.0 * float(values[1].mean()),
            "omega_ceiling": 100.0 * float(values[2].mean()), "n": int(values.shape[1]),
            "resamples_without_gap": int((~ok).sum())}


def pgr_rows(run_dir: Path, k: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Round k's PGR per judge from the outcomes the run kept: its policy and its ceiling against the initial one,
    and the floor (prompts some of the three left undecided are left out of all three)."""
    w2s = outcome_values(run_dir / f"round-{k:02d}" / "compare" / "initial" / "outcomes.jsonl")
    ceiling = outcome_values(run_dir / f"round-{k:02d}" / "compare" / "ceiling" / "outcomes.jsonl")
    floor = outcome_values(run_dir / "aligner-eval-prompts" / "outcomes.jsonl")
    rows = {}
    for judge in sorted(set(w2s) & set(ceiling) & set(floor)):
        ids = sorted(set(w2s[judge]) & set(ceiling[judge]) & set(floor[judge]))
        if ids:
            rows[judge] = pgr_with_ci([w2s[judge][i] for i in ids], [floor[judge][i] for i in ids],
                                      [ceiling[judge][i] for i in ids], seed=seed)
    return rows


def ceiling_round(run: RunContext, k: int, prompts: list[Prompt], ceiling: str, initial: str) -> str:
    """Round k of the ceiling track: the ceiling policy trained on the round's prompts with their references as the
    corrections (SFT: prompt -> reference; DPO: reference > its own answer), as round k trains the policy."""
    from w2s.backends.data import write_pair_rows, write_sft_rows
    from w2s.data.text import normalized_edit_distance

    cfg, method = run.cfg, run.cfg.train.method
    answers = generate_stage(run, k, ceiling, prompts, CEILING_GENERATE) if method == "dpo" else []
    chat, prompt_of, reply = prompt_format(run.cfg)

    def work(stage_dir: Path, rec: StageRecord) -> None:
        if method == "sft":
            path = stage_dir / "sft.jsonl"
            n = write_sft_rows(path, [(prompt_of(p.prompt), reply(p.reference)) for p in prompts], chat=chat)
            dropped = 0
        else:
            path = stage_dir / "pairs.jsonl"
            reference = {p.id: p.reference for p in prompts}
            threshold = float(cfg.train.dpo.min_pair_distance)
            keep = [(prompt_of(a["prompt"]), reply(reference[a["id"]]), reply(a["answer"])) for a in answers
                    if normalized_edit_distance(a["answer"], reference[a["id"]]) >= max(threshold, 1e-9)]
            n, dropped = write_pair_rows(path, keep, chat=chat), len(answers) - len(keep)
        rec.outputs["train"] = path
        rec.metrics = {"rows": n, "dropped_identical": dropped}
        say(f"round {k} ceiling-data: {n} {method} rows from the prompts' references")

    # The round's prompts and references, the same every time: hashed as the stage's input.
    references = run.rd.path / f"round-{k:02d}" / "ceiling-prompts.jsonl"
    write_jsonl(references, [{"id": p.id, "prompt": p.prompt, "reference": p.reference} for p in prompts])
    inputs = {"prompts": references, "policy": ceiling}
    data = Path(run.rd.run(CEILING_DATA, k, inputs, work)["train"])
    return train_stage(run, k, ceiling, initial, data, CEILING_TRAIN)


def ceiling_eval(run: RunContext, k: int, ceiling: str, evals: dict[str, list[dict[str, Any]]],
                 eval_prompts: list[Prompt]) -> dict[str, Any]:
    """Round k's ceiling policy against the initial one by every judge, then PGR per judge (a metrics row
    ``pgr/<judge>``), when the run has the floor (the Aligner judged on the evaluation prompts)."""
    from w2s.controller import evaluation
    from w2s.eval.panel import EvalItem, compare

    cfg = run.cfg
    answers = evaluation.eval_answers(run, k, f"ceiling-{k}", ceiling, eval_prompts, CEILING_ANSWERS)
    comparison = {"ceiling": (evaluation.answers_by_id(answers), evaluation.answers_by_id(evals["initial"]))}
    scores = {"ceiling": evaluation.kept_scores(answers, evals["initial"], cfg.eval.judges)}  # scored once, kept
    result = compare(cfg.eval.judges, EvalItem.of(eval_prompts), comparison, scores=scores,
                     open_workers=run.services.judges.open, cache_dir=run.rd.path / "judge-cache",
                     seed=int(cfg.run.seed), say=say)["ceiling"]
    say(f"round {k} eval: ceiling-{k} vs initial, {len(eval_prompts)} prompts")
    summary = evaluation.log_results(run, k, "ceiling-vs-initial", result,
                                     run.rd.stage_dir(k, "compare") / "ceiling",
                                     {"against": "initial", "compare_to": "initial", "policy": f"ceiling-{k}"})
    rows = pgr_rows(run.rd.path, k, seed=int(cfg.run.seed))
    if not rows:
        say(f"round {k} PGR: no floor (the Aligner was not judged on the evaluation prompts: eval.aligner)")
    for judge, row in rows.items():
        run.rd.log_metrics(k, f"pgr/{judge}", {"judge": judge, **row})
        say(f"  round {k} PGR ({judge}): {row['pgr']:+.2f} [{row['pgr_ci_low']:+.2f}, {row['pgr_ci_high']:+.2f}] "
            f"(w2s {row['omega_w2s']:+.1f}%, floor {row['omega_floor']:+.1f}%, ceiling {row['omega_ceiling']:+.1f}%)")
    return {"ceiling": summary, "pgr": rows}
