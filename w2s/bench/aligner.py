"""``w2s bench aligner``: a recipe's Aligner trained (once or once per seed) and its effect on answers it has never
seen, on its held-out triples and the recipe's (dev) evaluation prompts."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from w2s.seeds import seed_dirs, seeds_together


def bench_aligner(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train the Aligner of ``args.recipe`` (once, or once per ``--seeds`` seed) and measure what it does to answers
    it has never seen."""
    from w2s.aligner.cli import compose
    from w2s.console import say
    from w2s.errors import W2SError

    cfg = compose(args.recipe, list(args.overrides), job="loop")
    if cfg.eval.role == "test":  # this benchmark is for choosing: what it measures on becomes a dev set
        raise W2SError(f"eval.role=test ({cfg.eval.prompts.path}): w2s bench aligner compares settings, and a set "
                       "used to choose is a dev set; measure on the recipe's dev set (for the quickstart: --recipe "
                       "quickstart-dev), or give eval.prompts.path=DEV eval.role=dev")
    if args.seeds and args.aligner:
        raise W2SError("--seeds trains one Aligner per seed and --aligner measures one trained before: give one")
    out = Path(args.output or tempfile.mkdtemp(prefix="w2s-bench-aligner-"))
    if args.seeds:  # one Aligner per seed (run.seed: its split, warm-up rows, training and decoding), then the mean
        rows = []
        for seed, seed_out in zip(args.seeds, seed_dirs(out, args.seeds), strict=True):
            overrides = [*args.overrides, f"run.seed={seed}"]
            seed_cfg = compose(args.recipe, overrides, job="loop")
            rows += [{"seed": seed, **r} for r in _bench_one_aligner(args.recipe, seed_cfg, seed_out, None, overrides)]
        rows += _over_seeds(out, args.seeds, rows)
        aligner = seed_dirs(out, args.seeds)[0] / "aligner"
    else:
        trained = Path(args.aligner) if args.aligner else None
        aligner = trained or out / "aligner"
        rows = _bench_one_aligner(args.recipe, cfg, out, trained, list(args.overrides))
    say(f"benchmark outputs (answers, corrections, reports): {out}")
    if args.write:
        from w2s.data.files import atomic_write_text
        from w2s.results import aligner_results_markdown

        source = ["--aligner", args.aligner] if args.aligner else []
        seeds = ["--seeds", ",".join(map(str, args.seeds))] if args.seeds else []
        command = shlex.join(["w2s", "bench", "aligner", "--recipe", args.recipe, *source, *seeds, "--write",
                              args.write, *args.overrides])
        atomic_write_text(Path(args.write), aligner_results_markdown(args.recipe, command, cfg, aligner, rows))
        say(f"results: {args.write}")
    return rows


def _bench_one_aligner(recipe: str, cfg: Any, out: Path, trained: Path | None, overrides: list[str]
                       ) -> list[dict[str, Any]]:
    """One Aligner's rows: trained into OUT/aligner (unless ``trained`` names one), then measured on the held-out
    triples and the evaluation prompts, each set in its own folder under OUT."""
    import subprocess
    import sys

    from w2s.aligner.correct import PROVENANCE_KEY
    from w2s.console import say
    from w2s.data.files import read_jsonl
    from w2s.data.prompts import Prompt, read_prompts
    from w2s.eval.cli import aligner_corrections, answers_of, evaluate_and_report
    from w2s.roles.on_demand import ServicesOnDemand

    aligner = trained or out / "aligner"
    t0 = time.perf_counter()
    if not trained:  # --aligner: measure decoding changes on an Aligner trained before
        train = subprocess.run([sys.executable, "-m", "w2s.cli", "aligner", "train", recipe, "--output",
                                str(aligner), *overrides], capture_output=True, text=True)
        if train.returncode != 0:
            raise RuntimeError(f"aligner training failed:\n{train.stdout[-2000:]}{train.stderr[-2000:]}")
    train_s = time.perf_counter() - t0
    heldout = read_jsonl(aligner.with_name(aligner.name + ".work") / "eval.jsonl")
    sets = {"held-out triples": ([Prompt(str(t["id"]), t["question"], t["correction"]) for t in heldout],
                                 {str(t["id"]): t["answer"] for t in heldout})}
    prompts = read_prompts(cfg.eval.prompts, with_reference=True, what="eval.prompts", echo=say)
    prompts = prompts[: int(cfg.eval.max_prompts) or None]
    ns = argparse.Namespace(answer_key="answer", api_key_env="")
    sets["eval prompts"] = (prompts, None)  # answered by the strong model
    rows = []
    with contextlib.ExitStack() as stack:
        services = ServicesOnDemand(stack, cfg, out / "logs")  # generator, corrector and judges as in a round
        for name, (items, answers) in sets.items():
            folder = out / _set_folder(name)
            folder.mkdir(parents=True, exist_ok=True)
            t1 = time.perf_counter()
            if answers is None:
                answers = answers_of("upstream", cfg.model.strong.path, items, cfg, ns, folder, services)
            (folder / "corrections.jsonl").unlink(missing_ok=True)  # a new Aligner at the same path: correct again
            corrections = aligner_corrections(str(aligner), items, answers, cfg, folder, services)
            evaluate_and_report(cfg, items, corrections, answers, ("Aligner corrections", "original answers"), folder,
                                services)
            summary = json.loads((folder / "summary.json").read_text())["judges"]["similarity"]
            reasons = [r[PROVENANCE_KEY]["finish_reason"] for r in read_jsonl(folder / "corrections.jsonl")]
            rows.append({"set": name, "n": summary["n"], "omega": round(summary["omega"], 1),
                         "ci95": f"[{summary['ci_low']:+.1f}, {summary['ci_high']:+.1f}]",
                         "W/L/T": f"{summary['wins']}/{summary['losses']}/{summary['ties']}",
                         "p": round(summary["p_value"], 4),
                         "copy_rate": round(sum(corrections[i].strip() == answers[i].strip() for i in answers)
                                            / len(answers), 3),
                         "cut_off_rate": round(reasons.count("length") / len(reasons), 3),
                         "train_s": round(train_s), "eval_s": round(time.perf_counter() - t1),
                         # where the Aligner helps and where it harms: the failure modes a total hides
                         "by_category": {cat: {"n": c["n"], "omega": round(c["omega"], 1),
                                               "ci95": f"[{c['ci_low']:+.1f}, {c['ci_high']:+.1f}]",
                                               "W/L/T": f"{c['wins']}/{c['losses']}/{c['ties']}"}
                                         for cat, c in sorted((summary.get("by_category") or {}).items())}})
    return rows


def _set_folder(name: str) -> str:
    return name.replace(" ", "-")


def _over_seeds(out: Path, seeds: list[int], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per set, the seeds together: the mean of their omegas with a two-level bootstrap CI (seeds, then each seed's
    prompts: :func:`w2s.seeds.two_level_ci`), from the per-prompt outcomes each seed's evaluation kept."""
    from w2s.eval.stats import outcome_values

    together = []
    for name in dict.fromkeys(r["set"] for r in rows):
        per_seed = [list(outcome_values(d / _set_folder(name) / "outcomes.jsonl").get("similarity", {}).values())
                    for d in seed_dirs(out, seeds)]
        per_seed = [v for v in per_seed if v]  # a seed with no decided prompt has no omega to average
        if not per_seed:
            continue
        mine = [r for r in rows if r["set"] == name]
        every = [o for v in per_seed for o in v]  # +1 win, -1 loss, 0 tie
        _, mean, low, high = seeds_together(per_seed)
        together.append({"seed": "all", "set": name, "n": len(every), "omega": round(mean, 1),
                         "ci95": f"[{low:+.1f}, {high:+.1f}]",
                         "W/L/T": f"{every.count(1)}/{every.count(-1)}/{every.count(0)}", "p": None,
                         "copy_rate": round(sum(r["copy_rate"] for r in mine) / len(mine), 3),
                         "cut_off_rate": round(sum(r["cut_off_rate"] for r in mine) / len(mine), 3),
                         "train_s": sum(r["train_s"] for r in mine), "eval_s": sum(r["eval_s"] for r in mine)})
    return together
