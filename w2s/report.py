"""The researcher-facing summary of a run: ``report.html`` (self-contained) and ``report.md``, with plots under
``plots/``: omega per round with CIs for every judge, the Aligner's own effect, judge agreement, the breakdown by
category, training losses, samples side by side, and every stage's numbers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from w2s.data.files import read_jsonl
from w2s.eval.html import Figure, Section, Table, Text
from w2s.eval.report import OMEGA_NOTE, agreement_figure, category_table, omega_table, samples, write_reports
from w2s.rundir import read_metrics, read_state
from w2s.stages import ALIGNER_EVAL, ALIGNER_EVAL_PROMPTS, CORRECT, EVAL_ANSWERS, TRAIN


def latest_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl with one row per (round, stage): the last one (a rerun stage logs again)."""
    rows = {(row.get("round"), row.get("stage")): row for row in read_metrics(run_dir)}
    return list(rows.values())


def eval_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-(round, comparison, judge) rows, in round order."""
    rows = [m for m in metrics if str(m.get("stage", "")).startswith("eval-vs-") and "judge" in m]
    return sorted(rows, key=lambda m: (m["round"], m["compare_to"], m["judge"]))


def pgr_rows(metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-(round, judge) PGR rows (``loop.ceiling``), in round order."""
    return sorted((m for m in metrics if str(m.get("stage", "")).startswith("pgr/")),
                  key=lambda m: (m["round"], m["judge"]))


def _pgr_section(metrics: list[dict[str, Any]]) -> Section:
    rows = pgr_rows(metrics)
    if not rows:
        return Section("Performance gap recovered", [])
    ceiling = sorted((m for m in metrics if str(m.get("stage", "")).startswith("ceiling-vs-")),
                     key=lambda m: (m["round"], m["judge"]))
    table = Table(["round", "judge", "PGR", "95% CI", "ω w2s (%)", "ω floor (%)", "ω ceiling (%)", "N"],
                  [[m["round"], m["judge"], f"{m['pgr']:+.2f}", f"[{m['pgr_ci_low']:+.2f}, {m['pgr_ci_high']:+.2f}]",
                    f"{m['omega_w2s']:+.1f}", f"{m['omega_floor']:+.1f}", f"{m['omega_ceiling']:+.1f}", m["n"]]
                   for m in rows], "Every ω against the initial policy's answers, by the same judge.")
    return Section("Performance gap recovered", [
        Text("PGR = (w2s − floor) / (ceiling − floor) (Burns et al. 2023, for generation): w2s is the round's policy "
             "trained on the Aligner's corrections, the floor the Aligner's own corrections of the initial answers, "
             "the ceiling the same policy trained the same way on the prompts' gold references (loop.ceiling). 1: "
             "weak supervision as good as gold; 0: nothing over the weak side itself. The CI resamples prompts; a "
             "resample whose ceiling does not beat its floor has no PGR."), table,
        omega_table(ceiling, [("round", "round")], "The ceiling policy against the initial one.")])


def per_round(run_dir: Path, stage: str, name: str) -> list[tuple[int, Path]]:
    """(round, path) of ``round-NN/STAGE/NAME`` for every round that has it, in round order."""
    return [(int(path.parent.parent.name.split("-")[1]), path)
            for path in sorted(run_dir.glob(f"round-*/{stage}/{name}"))]


def train_manifests(run_dir: Path) -> list[tuple[int, Path, dict[str, Any]]]:
    """(round, stage folder, manifest) of each finished train stage, in round order."""
    return [(k, m.parent, read_state(m)) for k, m in per_round(run_dir, TRAIN.name, "manifest.json")]


def _train_curves(run_dir: Path, read: Callable[[dict[str, Any]], list[float]]) -> dict[int, list[float]]:
    """One curve per round from each finished train stage's manifest (``read`` picks it)."""
    return {k: values for k, _, manifest in train_manifests(run_dir) if (values := read(manifest))}


def _training_section(run_dir: Path) -> Section:
    """What each round trained on, the training loss per step (the reward model's under RLHF) and, under RLHF, PPO's
    mean reward per step."""
    from w2s.eval.plots import plot_losses

    figures = []
    losses = _train_curves(run_dir, lambda m: m.get("losses") or [])
    if losses:
        figures.append(Figure(plot_losses(losses, run_dir / "plots" / "train_loss.png"),
                              "Training loss per optimizer step (under RLHF, the reward model's)."))
    rewards = _train_curves(run_dir, lambda m: [s["reward"] for s in m.get("ppo_steps") or [] if "reward" in s])
    if rewards:
        figures.append(Figure(plot_losses(rewards, run_dir / "plots" / "ppo_reward.png", title="PPO reward",
                                          ylabel="mean reward of the step's rollouts"),
                              "PPO: the reward model's mean reward of each step's rollouts (OpenRLHF's train/reward)."))
    corrected = corrected_answers(run_dir)
    return Section("Training", ([corrected_table(corrected)] if corrected else []) + figures)


def _outcomes(path: Path) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    for r in read_jsonl(path) if path.exists() else []:
        out.setdefault(r["judge"], {})[str(r["id"])] = r["outcome"]
    return out


def eval_set_note(run_dir: Path, rows: list[dict[str, Any]]) -> str:
    """What the run knows of its evaluation prompts, and nothing more: their role as configured (``eval.role``) and
    how many of them it also trained on, as checked before it started (:mod:`w2s.controller.overlap`)."""
    from omegaconf import OmegaConf

    try:
        role = str(OmegaConf.select(OmegaConf.load(run_dir / "config.yaml"), "eval.role", default="dev"))
    except (OSError, ValueError):
        role = "dev"
    said = ("configured as a test set (eval.role=test): held back, its owner declares, until every choice was made"
            if role == "test" else "configured as a dev set (eval.role=dev): it may have been used to choose "
            "something, so its results are not a test result")
    row = next((r for r in rows if "overlap_loop_prompts" in r), None)
    if row is None:
        return f"The evaluation prompts are {said}."
    aligner = row.get("overlap_aligner_questions", "absent")
    trained = ("the Aligner keeps no record of its training questions" if aligner is None else
               f"{aligner} among the Aligner's training questions" if aligner != "absent" else "")
    return (f"The evaluation prompts are {said}. Checked before the run started: {row['overlap_loop_prompts']} of "
            f"them among the loop's prompts" + (f", {trained}" if trained else "") + ".")


def answers_judged(run_dir: Path) -> list[dict[str, Any]]:
    """Each policy's answers to the evaluation prompts, as the judges saw them: how many, their mean length in
    tokens (None for answers kept before w2s recorded it) and the share cut off at ``eval.generate.max_new_tokens``.
    A preference-trained policy's answers often change length, which similarity and pairwise judges reward or
    punish apart from content: read ω beside these."""
    rows = []
    for k, path in per_round(run_dir, EVAL_ANSWERS.name, "answers.jsonl"):
        answers = read_jsonl(path)
        if not answers:
            continue
        tokens = [a.get("completion_tokens") for a in answers]
        rows.append({"round": k, "policy": answers[0].get("policy", ""),
                     "n": len(answers),
                     "mean_tokens": None if None in tokens else round(sum(tokens) / len(tokens), 1),
                     "cut_off_rate": sum(a.get("finish_reason") == "length" for a in answers) / len(answers)})
    return rows


def corrected_answers(run_dir: Path) -> list[dict[str, Any]]:
    """Each round's answers and the Aligner's corrections, what the round's training data is made of: how many,
    the share of answers and of corrections cut off at max_new_tokens, and the share the Aligner copied unchanged.
    A pair whose rejected answer was cut off and whose chosen correction was not teaches finishing sooner."""
    rows = []
    for k, path in per_round(run_dir, CORRECT.name, "corrections.jsonl"):
        pairs = read_jsonl(path)
        if pairs:
            n = len(pairs)
            rows.append({"round": k, "n": n,
                         "answers_cut_off": sum(r.get("finish_reason") == "length" for r in pairs) / n,
                         "corrections_cut_off": sum(r.get("correction_finish_reason") == "length" for r in pairs) / n,
                         "copied": sum(r["correction"].strip() == r["answer"].strip() for r in pairs) / n})
    return rows


def corrected_table(rows: list[dict[str, Any]]) -> Table:
    return Table(["round", "answers", "answers cut off", "corrections cut off", "copied"],
                 [[r["round"], r["n"], f"{r['answers_cut_off']:.0%}", f"{r['corrections_cut_off']:.0%}",
                   f"{r['copied']:.0%}"] for r in rows],
                 "What each round trained on: the policy's answers and the Aligner's corrections of them, from which "
                 "the round's training rows are made, cut off at max_new_tokens or copied unchanged.")


def answers_table(rows: list[dict[str, Any]]) -> Table:
    return Table(["round", "policy", "answers", "mean length (tokens)", "cut off at max_new_tokens"],
                 [[r["round"], r["policy"], r["n"], "-" if r["mean_tokens"] is None else f"{r['mean_tokens']:.1f}",
                   f"{r['cut_off_rate']:.0%}"] for r in rows],
                 "Each policy's answers to the evaluation prompts, cut off at eval.generate.max_new_tokens or not: "
                 "a policy whose answers grew or shrank, or are cut off more often, is judged on that too, not only "
                 "on what it says.")


def _evaluation_section(run_dir: Path, evals: list[dict[str, Any]]) -> Section:
    from w2s.eval.plots import plot_omega

    blocks: list[Any] = [Text(f"{eval_set_note(run_dir, evals)}\n\n{OMEGA_NOTE}")]
    if evals:
        points = [{"round": m["round"], "series": f"{m['judge']} vs {m['compare_to']}", "omega": m["omega"],
                   "ci_low": m["ci_low"], "ci_high": m["ci_high"]} for m in evals]
        blocks.append(Figure(plot_omega(points, run_dir / "plots" / "omega.png",
                                        title="Each round's policy vs the previous and the initial one"),
                             "ω per round with 95% CIs, per judge and baseline."))
        blocks.append(omega_table(evals, [("round", "round"), ("vs", "compare_to"), ("baseline", "against")],
                                  "Held-out evaluation prompts, paired by prompt id."))
        answered = answers_judged(run_dir)
        if answered:
            blocks.append(answers_table(answered))
        last = max(m["round"] for m in evals)
        final = [m for m in evals if m["round"] == last and m["compare_to"] == "initial"]
        cats = category_table(final)
        if cats:
            cats.caption = f"Round {last} vs the initial policy, by category."
            blocks.append(cats)
        agree = agreement_figure(_outcomes(run_dir / f"round-{last:02d}" / "compare" / "initial" / "outcomes.jsonl"),
                                 run_dir / "plots" / "agreement.png")
        if agree:
            blocks.append(agree)
    return Section("Evaluation: each round's policy", blocks if evals else [])


def _aligner_section(run_dir: Path, metrics: list[dict[str, Any]]) -> Section:
    rows = sorted((m for m in metrics if str(m.get("stage", "")).startswith((f"{ALIGNER_EVAL.name}/",
                                                                              f"{ALIGNER_EVAL_PROMPTS.name}/"))),
                  key=lambda m: (m.get("round") or 0, m["stage"], m["judge"]))
    if not rows:
        return Section("The Aligner's own effect", [])
    per_round = any(m.get("round") for m in rows)  # aligner.per_round: Aligner_k judged in round k
    r0 = rows[-1]
    for m in rows:
        m.setdefault("set", "held-out triples (unseen questions)")
    blocks: list[Any] = [
        Text(f"The trained Aligner{' of the last round' if per_round else ''} corrected the answers of its held-out "
             "triples (whole questions kept out of its training) and, where the run evaluates, the initial policy's "
             "answers to the evaluation prompts. Each judge compared the corrections with the original answers (the "
             f"embedding judge against the reference correction). Copy rate {r0['copy_rate']:.0%}; corrections cut "
             f"off at max_new_tokens {r0['truncated_rate']:.0%} ({r0['set']}). "
             + eval_set_note(run_dir, [m for m in rows if m["stage"].startswith(f"{ALIGNER_EVAL_PROMPTS.name}/")])),
        omega_table(rows, [("set", "answers corrected")] + ([("round", "round")] if per_round else []),
                    "Corrected vs original answers" + (" (Aligner_k in round k)." if per_round else "."))]
    found = sorted(run_dir.glob(f"round-*/{ALIGNER_EVAL.name}/corrections.jsonl")) or [
        run_dir / ALIGNER_EVAL.name / "corrections.jsonl"]
    corrections = found[-1]
    s = samples(read_jsonl(corrections) if corrections.exists() else [],
                ["question", "answer", "aligner_correction", "correction"],
                "Held-out triples: the answer, the Aligner's correction, and the triple's reference correction.")
    return Section("The Aligner's own effect", blocks + ([s] if s else []))


def _samples_section(run_dir: Path) -> Section:
    blocks: list[Any] = []
    first = run_dir / "round-01" / CORRECT.name / "corrections.jsonl"
    if first.exists():
        s = samples(read_jsonl(first), ["prompt", "answer", "correction"],
                    "Round 1: the policy's answers and the Aligner's corrections (what the policy is trained on).")
        blocks += [s] if s else []
    rounds = [path for _, path in per_round(run_dir, EVAL_ANSWERS.name, "answers.jsonl")]
    if len(rounds) >= 2:
        initial = {str(r["id"]): r for r in read_jsonl(rounds[0])}
        final = read_jsonl(rounds[-1])
        rows = [{"prompt": r["prompt"], "initial policy": initial.get(str(r["id"]), {}).get("answer", ""),
                 "final policy": r["answer"]} for r in final]
        s = samples(rows, ["prompt", "initial policy", "final policy"],
                    f"Held-out prompts: the initial policy's answer and {rounds[-1].parent.parent.name}'s.")
        blocks += [s] if s else []
    return Section("Samples", blocks)


def _stages_section(metrics: list[dict[str, Any]]) -> Section:
    rows = []
    for m in sorted((m for m in metrics if "judge" not in m), key=lambda m: (m.get("round") or 0, m.get("time", ""))):
        nums = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()
                         if k not in ("round", "stage", "time", "attempt") and v is not None
                         and not isinstance(v, (dict, list)))
        rows.append(["-" if m.get("round") is None else m["round"], m["stage"], nums])
    return Section("Stages", [Table(["round", "stage", "numbers"], rows)] if rows else [])


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` and ``report.md`` of a run; returns the Markdown path."""
    run_dir = Path(run_dir)
    metrics = latest_metrics(run_dir)
    training = _training_section(run_dir)
    config = Text("Config: config.yaml in the run directory (fully resolved; its header names the w2s version and "
                  "git revision).") if (run_dir / "config.yaml").exists() else None
    sections = [_evaluation_section(run_dir, eval_rows(metrics)), _pgr_section(metrics),
                _aligner_section(run_dir, metrics), training,
                _samples_section(run_dir), _stages_section(metrics)]
    if (run_dir / "interpret").is_dir():  # written by `w2s interpret` into this run directory
        from w2s.interpret.report import interpret_sections

        sections += interpret_sections(run_dir / "interpret")
    if config:
        sections.append(Section("Provenance", [config]))
    _, md = write_reports(run_dir, f"w2s run report: {run_dir.name}", sections,
                          subtitle=f"Written {time.strftime('%Y-%m-%d %H:%M')} from {run_dir / 'metrics.jsonl'}")
    return md
