"""The loop's evaluation stages: each policy's answers on the held-out prompts (scored once by every score judge),
the comparisons of each round's policy with the previous and the initial one by every judge, and the Aligner's own
effect on the held-out questions of its training triples.

Numbers go to ``metrics.jsonl``, one row per (comparison, judge): stage ``eval-vs-<against>/<judge>``, or
``aligner-eval/<judge>`` for the Aligner. Per-prompt outcomes and every pairwise verdict with the judge's text go to
``round-KK/compare/<against>/`` (``outcomes.jsonl``, ``judgements.jsonl``). Judge outputs are cached under
``RUN_DIR/judge-cache``, so a resumed run does not ask again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from w2s.console import say
from w2s.data.files import read_jsonl, write_jsonl
from w2s.eval.panel import SCORE_KINDS, ComparisonResult, EvalItem, compare, enabled_judges, fingerprint, score_answers
from w2s.generation.sampling import stage_seed
from w2s.rundir import StageRecord, source_file
from w2s.stages import ALIGNER_EVAL, ALIGNER_EVAL_PROMPTS, BASELINE_ANSWERS, EVAL_ANSWERS, Stage

if TYPE_CHECKING:
    from w2s.controller.context import RunContext
    from w2s.data.prompts import Prompt


def eval_answers(run: RunContext, round_index: int, label: str, policy: str, prompts: list[Prompt],
                 stage: Stage | None = None) -> list[dict[str, Any]]:
    """One policy's answers on the evaluation prompts, with every score judge's score (a stage: round 0's, the
    initial policy's, depends on it alone; ``stage``: another track's, the ceiling's)."""
    cfg = run.cfg

    def work(stage_dir: Path, rec: StageRecord) -> None:
        outs = run.generate(policy, prompts, cfg.eval.generate, int(cfg.run.seed),
                             f"round {round_index} eval answers ({label})", rec)
        answers = {p.id: o.text for p, o in zip(prompts, outs)}
        scores = score_answers(cfg.eval.judges, EvalItem.of(prompts), answers, open_workers=run.services.judges.open)[0]
        judged_by = {name: fingerprint(cfg.eval.judges[name]) for name in scores}
        rows = [{"id": p.id, "prompt": p.prompt, "answer": o.text, "finish_reason": o.finish_reason,
                 "completion_tokens": o.completion_tokens, "reference": p.reference, "category": p.category,
                 "policy": label, "scores": {name: s[p.id] for name, s in scores.items()}, "judged_by": judged_by}
                for p, o in zip(prompts, outs)]
        write_jsonl(stage_dir / "answers.jsonl", rows)
        rec.outputs["answers"] = stage_dir / "answers.jsonl"
        rec.metrics = {"policy": label, "truncated": sum(o.finish_reason == "length" for o in outs),
                       "mean_tokens": sum(o.completion_tokens for o in outs) / max(len(outs), 1),
                       **{f"mean_{name}": sum(s.values()) / len(s) for name, s in scores.items()}}

    stage = stage or (BASELINE_ANSWERS if round_index == 0 else EVAL_ANSWERS)
    inputs = {"prompts": source_file(cfg.eval.prompts.path), "policy": policy}
    return read_jsonl(run.rd.run(stage, round_index, inputs, work)["answers"])


def answers_by_id(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {str(r["id"]): r["answer"] for r in rows}


def kept_scores(cand: list[dict[str, Any]], base: list[dict[str, Any]], judges: Any) -> dict[str, tuple[dict, dict]]:
    """Per score judge, (candidate scores, baseline scores) stored with the answers by this very judge (a judge
    added or changed since is left out: it scores the answers again)."""
    out = {}
    for name, cfg in enabled_judges(judges).items():
        fp = fingerprint(cfg)
        if cfg.kind in SCORE_KINDS and all(r.get("judged_by", {}).get(name) == fp for r in cand + base):
            out[name] = tuple({str(r["id"]): r["scores"][name] for r in rows} for rows in (cand, base))
    return out


def log_results(run: RunContext, round_index: int | None, stage: str, result: ComparisonResult, out_dir: Path,
                extra: dict[str, Any]) -> dict[str, Any]:
    """Metrics rows, the console lines and the audit files of one comparison."""
    if stage.startswith(("eval-vs-", "ceiling-vs-")) or stage == ALIGNER_EVAL_PROMPTS.name:  # on the eval prompts
        extra = {**extra, **run.eval_overlap}
    result.write(out_dir)
    summary = {}
    for name, s in result.summaries.items():
        run.rd.log_metrics(round_index, f"{stage}/{name}", {**extra, **s.as_dict()})
        summary[name] = s.as_dict()
        say(f"  {s.line()}")
    return summary


def compare_stage(run: RunContext, k: int, label: str, previous: str, answers: dict[str, list[dict[str, Any]]],
                  prompts: list[Prompt]) -> dict[str, Any]:
    """Round k's policy against the previous and the initial one, by every judge, paired by prompt id."""
    cfg = run.cfg
    bases = {against: (previous if against == "previous" else "initial") for against in cfg.eval.compare_to}
    comparisons = {against: (answers_by_id(answers[label]), answers_by_id(answers[base]))
                   for against, base in bases.items()}
    scores = {against: kept_scores(answers[label], answers[base], cfg.eval.judges) for against, base in bases.items()}
    results = compare(cfg.eval.judges, EvalItem.of(prompts), comparisons, scores=scores,
                      open_workers=run.services.judges.open, cache_dir=run.rd.path / "judge-cache",
                      seed=int(cfg.run.seed), say=say)
    summary: dict[str, Any] = {"round": k, "policy": label}
    for against, result in results.items():
        say(f"round {k} eval: {label} vs {against} ({bases[against]}), {len(prompts)} prompts")
        summary[against] = log_results(run, k, f"eval-vs-{against}", result,
                                       run.rd.stage_dir(k, "compare") / against,
                                       {"against": bases[against], "compare_to": against})
    return summary


def _heldout_sides(rows: list[dict[str, Any]]) -> tuple[list[EvalItem], dict[str, str], dict[str, str]]:
    """Items (the triple's correction as reference), the Aligner's corrections, the original answers."""
    return ([EvalItem(r["id"], r["question"], r["correction"]) for r in rows],
            {r["id"]: r["aligner_correction"] for r in rows}, {r["id"]: r["answer"] for r in rows})


def aligner_eval_stage(run: RunContext, aligner: str, heldout: Path, k: int | None = None, *,
                       stage: Stage = ALIGNER_EVAL, what: str = "held-out triples (unseen questions)"
                       ) -> dict[str, Any] | None:
    """The Aligner's corrections of held-out (question, answer, reference) rows against those answers, by every
    judge (the row's reference correction is the embedding judge's reference). ``stage``: the rows are its held-out
    triples (``aligner-eval``) or the initial policy's answers to the evaluation prompts (``aligner-eval-prompts``,
    the set ``eval.role`` declares). Its rows of metrics.jsonl are ``<stage>/<judge>``."""
    rd, cfg = run.rd, run.cfg
    triples = read_jsonl(heldout) if heldout.exists() else []
    if not triples:
        say("aligner eval: no held-out triples (aligner.train.eval_fraction=0); skipped")
        return None

    def work(stage_dir: Path, rec: StageRecord) -> None:
        say(f"aligner eval: the Aligner corrects the answers of {len(triples)} {what}")
        outs = run.services.corrector.correct(aligner, [(t["question"], t["answer"]) for t in triples],
                                              seed=stage_seed(cfg.correct.seed, cfg.run.seed, "correct", k),
                                              what="aligner eval")[0]
        rows = [{**t, "id": str(t["id"]), "aligner_correction": o.text, "finish_reason": o.finish_reason}
                for t, o in zip(triples, outs)]
        cand, base = score_answers(cfg.eval.judges, *_heldout_sides(rows), open_workers=run.services.judges.open)
        judged_by = {name: fingerprint(cfg.eval.judges[name]) for name in cand}
        for r in rows:  # score judges' scores kept with the stage, so a resumed run does not score again
            r["scores"] = {name: [cand[name][r["id"]], base[name][r["id"]]] for name in cand}
            r["judged_by"] = judged_by
        write_jsonl(stage_dir / "corrections.jsonl", rows)
        rec.outputs["corrections"] = stage_dir / "corrections.jsonl"
        rec.metrics = {"heldout": len(rows)}

    # k: the round's own Aligner (aligner.per_round)
    outputs = rd.run(stage, k, {"heldout": heldout, "aligner": aligner}, work)
    rows = read_jsonl(outputs["corrections"])
    items, corrections, answers = _heldout_sides(rows)
    scores = {name: tuple({r["id"]: r["scores"][name][side] for r in rows} for side in (0, 1))
              for name, j in enabled_judges(cfg.eval.judges).items()
              if all(r.get("judged_by", {}).get(name) == fingerprint(j) for r in rows)}
    result = compare(cfg.eval.judges, items, {"aligner": (corrections, answers)}, scores={"aligner": scores},
                     open_workers=run.services.judges.open, cache_dir=rd.path / "judge-cache", seed=int(cfg.run.seed),
                     say=say)["aligner"]
    copy = sum(corrections[i].strip() == answers[i].strip() for i in answers) / len(rows)
    cut = sum(r["finish_reason"] == "length" for r in rows) / len(rows)
    say(f"aligner eval: corrected vs original answers on {len(rows)} {what}; copy rate {copy:.0%}, cut off at "
        f"max_new_tokens {cut:.0%}")
    return log_results(run, k, stage.name, result, rd.stage_dir(k, stage.name),
                       {"heldout": len(rows), "set": what, "copy_rate": copy, "truncated_rate": cut})


def aligner_eval_prompts(run: RunContext, aligner: str, initial: list[dict[str, Any]], prompts: list[Prompt]
                         ) -> dict[str, Any] | None:
    """The Aligner on the initial policy's answers to the evaluation prompts (references as the corrections)."""
    rows = [{"id": str(p.id), "question": p.prompt, "answer": a["answer"], "correction": p.reference or "",
             "category": p.category} for p, a in zip(prompts, initial, strict=True)]
    path = run.rd.path / "aligner-eval-prompts.jsonl"
    write_jsonl(path, rows)  # the same rows every time: its hash is the stage's input
    return aligner_eval_stage(run, aligner, path, stage=ALIGNER_EVAL_PROMPTS,
                              what="evaluation prompts as the initial policy answers them")
