"""``w2s bench``: throughput of the hot paths, the Aligner's effect and where a run's time goes, printed as a table.

* ``w2s bench generate``: engine start-up, tokens/s, prompts/s and peak memory of the generation backends side by
  side (``--backend transformers,vllm``), the transformers backend at several batch sizes, each in the generator
  actor a round of ``--recipe`` would start.
* ``w2s bench train``: samples/s of OpenRLHF's SFT or DPO trainer on the recipe's trainer ranks.
* ``w2s bench aligner``: trains a recipe's Aligner, then its effect: omega with a 95% CI (embedding judge), copy
  rate and share of corrections cut off at max_new_tokens, on the held-out questions of its triples and on the
  recipe's evaluation prompts answered by its strong model (also by the prompts' category). It is run to choose,
  so it refuses a set declared ``eval.role: test`` (by default it measures the quickstart's dev set, ``--recipe
  quickstart-dev``); ``--write`` puts its rows in a results file.
* ``w2s bench loop``: runs a recipe (or reads a finished run, ``--run-dir``) and prints, per stage and per round,
  wall seconds against the part spent in work (generation, correction, optimizer steps, judging, as the role
  services timed it): the rest is start-up and orchestration. Also how many actor processes each role started.

Each runs on the role services, as a round does (the recipe's placement, engines and actor logs, in the
output folder's logs/), and prints the peak resident memory of the actors that did the work, their engines'
processes included. Run them on an otherwise idle machine; numbers from a loaded machine mean little.
They are benchmarks, not tests: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any

from w2s.seeds import parse_seeds, seed_dirs, seeds_together
from w2s.workers.requests import TrainDPO, Training, TrainSFT

PROMPTS = ["What is the capital of France?", "How can I sleep better?", "Explain photosynthesis briefly.",
           "Give me three tips for a job interview.", "Why is the sky blue?", "How do I apologise to a friend?",
           "What is 17 times 23?", "Write a haiku about rain."]


def _bench_services(args: argparse.Namespace, stack: contextlib.ExitStack, overrides: list[str]
                    ) -> tuple[Any, Path]:
    """The recipe's config with ``overrides`` (the model under test), and a private Ray for the role services
    (not counted in any number: a run starts it once). Actor logs go to the output folder's logs/."""
    from w2s.aligner.cli import compose
    from w2s.cluster import RayCluster

    cfg = compose(args.recipe, [*args.overrides, *overrides], job="loop")
    out = Path(args.output or tempfile.mkdtemp(prefix=f"w2s-bench-{args.what}-"))
    out.mkdir(parents=True, exist_ok=True)
    stack.enter_context(RayCluster(cfg.cluster, actor_logs=str(out / "logs"), log_level=str(cfg.log.level)))
    return cfg, out


def bench_generate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each backend of ``--backend`` in the generator actor a round would start (the recipe's placement, engine
    settings and tensor parallelism), one after the other on the same prompts: start-up (actor and engine) once,
    then each batch size; peak memory is the actor's, its engine's processes included.

    vLLM schedules its own batches, so it is measured once with every prompt submitted together (``batch``
    says ``all``); the transformers backend is measured at each ``--batch`` size.
    """
    from omegaconf import OmegaConf

    from w2s.roles import Services

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    rows = []
    with contextlib.ExitStack() as stack:
        cfg, _ = _bench_services(args, stack, [f"model.strong.path={args.model}",
                                               f"model.strong.dtype={args.dtype or 'bfloat16'}"])
        for backend in args.backend:
            sampling = OmegaConf.merge(cfg.generate, {"backend": backend, "max_new_tokens": args.max_new_tokens,
                                                      "temperature": 0.0})
            measured = []
            with Services(cfg) as services:  # closed after each backend: the next one's memory is its own
                t0 = time.perf_counter()
                services.generator.hold(args.model, cfg.model.strong, sampling)
                startup = time.perf_counter() - t0
                for batch in list(args.batch) if backend == "transformers" else ["all"]:
                    size = len(prompts) if batch == "all" else int(batch)
                    sampling = OmegaConf.merge(sampling, {"batch_prompts_per_actor": size})
                    # warm-up: first-call allocations, compiled kernels
                    services.generator.generate(args.model, prompts[:size], sampling, 0,
                                                what=f"bench {backend} warm-up")
                    t1 = time.perf_counter()
                    outs, _ = services.generator.generate(args.model, prompts, sampling, 0, what=f"bench {backend}")
                    secs = time.perf_counter() - t1
                    tokens = sum(o.completion_tokens for o in outs)
                    measured.append({"backend": backend, "batch": batch, "prompts": len(prompts),
                                     "new_tokens": tokens, "startup_s": round(startup, 1), "seconds": round(secs, 2),
                                     "tokens_per_s": round(tokens / secs, 1),
                                     "prompts_per_s": round(len(prompts) / secs, 2)})
                peak = round(services.peak_memory_mb("generator"))
            rows += [{**r, "peak_mem_mb": peak} for r in measured]
    return rows


def bench_train(args: argparse.Namespace) -> list[dict[str, Any]]:
    """OpenRLHF's trainer for each method of ``--method`` (SFT, DPO) on the recipe's trainer ranks
    (``cluster.trainer``), on ``--rows`` synthetic rows: the wall time of the call (the ranks' start-up included),
    the trainer's ``fit`` time and samples/s, and the ranks' peak memory together. With ``--peer``, each method
    also through OpenRLHF's own command line on the same rows and flags (:mod:`w2s.bench_peer`)."""
    from omegaconf import OmegaConf

    from w2s.assets import resolve_model_path
    from w2s.backends import data as data_files
    from w2s.roles import Services

    rows = []
    with contextlib.ExitStack() as stack:
        cfg, out = _bench_services(args, stack, [f"model.strong.path={args.model}"])
        model = resolve_model_path(args.model)
        ranks = int(cfg.cluster.trainer.num_actors)
        answers = [f"Here is a short answer number {i}, with a few more words to make it realistic." for i in
                   range(args.rows)]
        sections = {method: OmegaConf.merge(cfg.train[method], {
            "micro_batch_samples_per_device": args.micro_batch,
            "global_batch_samples": args.micro_batch * ranks * 2},  # two micro-batches a step on each rank
            {"param_dtype": args.dtype} if args.dtype else {}) for method in args.method}
        if args.peer:
            from w2s.bench_peer import check

            check({m: str(s.param_dtype) for m, s in sections.items()}, ranks)
        for method, section in sections.items():
            data = out / f"{method}.jsonl"  # beside the actor logs: on a cluster, a folder every node reads
            if method == "sft":
                data_files.write_sft_rows(data, [(PROMPTS[i % 8], a) for i, a in enumerate(answers)], chat=True)
                request: Training = TrainSFT(section=section, policy=model, data=str(data),
                                             output=str(out / "policy"))
            else:
                data_files.write_pair_rows(data, [(PROMPTS[i % 8], a, "No.") for i, a in enumerate(answers)])
                request = TrainDPO(section=section, policy=model, reference=model,  # the reference: the same model
                                   data=str(data), output=str(out / "policy"))
            with Services(cfg) as services:  # closed after each method: the next one's memory is its own
                t0 = time.perf_counter()
                result = services.trainer.train(request)
                secs = time.perf_counter() - t0
                peak = services.peak_memory_mb("trainer")
            measured = [("w2s", secs, result["fit_seconds"], result["steps"], result["samples"], peak)]
            if args.peer:
                from w2s.bench_peer import train_as_w2s

                measured.append(("openrlhf-cli", *train_as_w2s(cfg, method, section, request, out)))
            rows += [{"runner": runner, "method": method, "model": args.model, "dtype": str(section.param_dtype),
                      "ranks": ranks, "samples": samples, "steps": steps, "seconds_total": round(total, 2),
                      "seconds_fit": round(fit, 2), "samples_per_s": round(samples / max(fit, 1e-9), 2),
                      "peak_mem_mb": round(peak)} for runner, total, fit, steps, samples, peak in measured]
    return rows


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


def loop_times(run_dir: Path) -> list[dict[str, Any]]:
    """Per stage of a run (its manifests), then per round and for the whole run: wall seconds, work seconds and
    the rest (start-up and orchestration), the role groups started and the refit checks of weights taken in
    place."""
    from collections import Counter

    from w2s.rundir import read_state

    manifests = sorted(run_dir.glob("*/manifest.json")) + sorted(run_dir.glob("round-*/*/manifest.json"))
    rows: list[dict[str, Any]] = []
    totals: dict[str, list[Any]] = {}
    for path in manifests:
        m = read_state(path)
        wall, work = float(m.get("seconds", 0.0)), float(m.get("work_seconds", 0.0))
        services = m.get("services") or {}
        started, refits = Counter(services.get("started") or {}), list(services.get("refits") or [])
        where = str(path.parent.relative_to(run_dir))
        rows.append(_time_row(where, wall, work, started, refits))
        group = where.split("/")[0] if where.startswith("round-") else "before the rounds"
        for key in (group, "whole run"):
            t = totals.setdefault(key, [0.0, 0.0, Counter(), []])
            t[0], t[1] = t[0] + wall, t[1] + work
            t[2].update(started)
            t[3] += refits
    return rows + [_time_row(f"{key} (total)", *t) for key, t in totals.items()]


def _time_row(where: str, wall: float, work: float, started: dict[str, int], refits: list[dict[str, Any]]
              ) -> dict[str, Any]:
    other = max(wall - work, 0.0)
    checked = [r for r in refits if r.get("checked")]
    refit = "-" if not refits else f"{len(checked)} passed" + (
        f" (max {max(r['mean_abs_diff'] for r in checked):.2g})" if checked else "") + (
        f", {len(refits) - len(checked)} unchecked" if len(checked) < len(refits) else "")
    return {"stage": where, "wall_s": round(wall, 1), "work_s": round(work, 1), "startup_and_orchestration_s":
            round(other, 1), "startup_share": f"{100 * other / wall:.0f}%" if wall else "-",
            "roles_started": ", ".join(f"{r} {n}" for r, n in sorted(started.items())) or "-", "refit_checks": refit}


def bench_loop(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run ``args.recipe`` (unless ``--run-dir`` names a finished run) and say where its time went."""
    import subprocess
    import sys
    from collections import Counter

    run_dir = Path(args.run_dir or args.output or tempfile.mkdtemp(prefix="w2s-bench-loop-"))
    if not args.run_dir:
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "w2s.cli", "run", args.recipe, f"run.dir={run_dir}",
                              *args.overrides])
        if run.returncode != 0:
            raise RuntimeError(f"w2s run {args.recipe} failed (exit {run.returncode}); its run dir: {run_dir}")
        print(f"w2s run {args.recipe}: {time.perf_counter() - t0:.0f} s in all, run dir {run_dir}")
    cluster = run_dir / "cluster.json"
    if cluster.exists():
        started = Counter(a["role"] for a in json.loads(cluster.read_text())["actors"])
        print("actor processes started: " + ", ".join(f"{role} {n}" for role, n in sorted(started.items())))
    from w2s.results import ppo_rows

    for row in ppo_rows(run_dir):
        print("PPO " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in row.items()))
    if args.write:
        from w2s.results import write_results

        source = ["--run-dir", args.run_dir] if args.run_dir else ["--recipe", args.recipe]
        command = shlex.join(["w2s", "bench", "loop", "--write", args.write, *source, *args.overrides])
        print(f"results: {write_results(run_dir, Path(args.write), command, loop_times(run_dir))}")
    return loop_times(run_dir)


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    _table([{k: v for k, v in r.items() if k != "by_category"} for r in rows])
    by_category = [{"set": r["set"], "category": cat, **c} for r in rows for cat, c in r.get("by_category", {}).items()]
    if by_category:
        print()
        _table(by_category)


def _table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(("-" if r[k] is None else str(r[k])).ljust(w) for k, w in zip(keys, widths)))


def cmd_bench(args: argparse.Namespace) -> int:
    if args.recipe is None:  # the Aligner benchmark chooses, so by default on the quickstart's dev set
        args.recipe = "quickstart-dev" if args.what == "aligner" else "quickstart"
    rows = {"generate": bench_generate, "train": bench_train, "aligner": bench_aligner,
            "loop": bench_loop}[args.what](args)
    _print(rows, args.json)
    if args.write and args.what in THROUGHPUT:  # (aligner and loop write files of their own shape)
        from w2s.data.files import atomic_write_text
        from w2s.results import throughput_results_markdown

        atomic_write_text(Path(args.write), throughput_results_markdown(args.what, _command(args), rows,
                                                                        THROUGHPUT[args.what]))
        print(f"results: {args.write}")
    return 0


# What the throughput benchmarks' results files say their rows are.
THROUGHPUT = {
    "generate": "Each backend in the generator actor a round starts, one after the other on the same prompts, greedy. "
                "startup_s: the actor and its engine, once per backend; seconds, tokens/s and prompts/s: the timed "
                "pass after a warm-up pass; peak_mem_mb: the actor's resident peak, its engine's processes included. "
                "vLLM schedules its own batches (batch `all`).",
    "train": "OpenRLHF's trainer on the recipe's trainer ranks (runner `w2s`), on synthetic rows, one method after "
             "the other; with --peer, each also through OpenRLHF's own command line on the same rows and flags, in "
             "a process of its own with as many torch threads (runner `openrlhf-cli`). seconds_total: the call, "
             "start-up, model loading and saving included (for the CLI, its process's Python start-up and imports; "
             "for w2s, the trainer actor's start); seconds_fit and samples_per_s: the trainer's fit loop alone; "
             "peak_mem_mb: the resident peak of the ranks (or the CLI's process) together.",
}


def _command(args: argparse.Namespace) -> str:
    """The command line that measured ``args``'s rows, as a results file quotes it."""
    flags = ["--recipe", args.recipe, "--model", args.model, *(["--dtype", args.dtype] if args.dtype else [])]
    if args.what == "generate":
        flags += ["--backend", ",".join(args.backend), "--prompts", str(args.prompts),
                  "--batch", ",".join(map(str, args.batch)), "--max-new-tokens", str(args.max_new_tokens)]
    else:
        flags += ["--method", ",".join(args.method), "--rows", str(args.rows), "--micro-batch", str(args.micro_batch),
                  *(["--peer"] if args.peer else [])]
    return shlex.join(["w2s", "bench", args.what, *flags, "--write", args.write, *args.overrides])


def _listed(allowed: tuple[str, ...], what: str) -> Any:
    """An argparse type: comma-separated names, each one of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {bad or text!r}: choose from {', '.join(allowed)}")
        return names

    return parse


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure generation tokens/s, training samples/s, an Aligner's effect, "
                              "or where a run's time goes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["generate", "train", "aligner", "loop"])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides of the recipe")
    p.add_argument("--recipe", help="aligner: the recipe whose Aligner is trained and measured on its dev set "
                   "(default quickstart-dev); loop: the recipe that runs; generate, train: the recipe whose cluster, "
                   "engine and training settings apply (default quickstart)")
    p.add_argument("--output", help="aligner: folder for the Aligner and the evaluations; loop: the run dir; "
                   "generate, train: folder for the actor logs and the training's data and model (default: a new "
                   "temp dir)")
    p.add_argument("--run-dir", help="loop: read this finished run instead of running the recipe")
    p.add_argument("--write", help="also write the measured results to this Markdown file (what a README quotes: "
                   "tests/test_results.py checks the quotes against it)")
    p.add_argument("--seeds", type=parse_seeds, help="aligner: train and measure one Aligner per seed (run.seed=N, "
                   "in OUTPUT/seed-N), then the mean omega of each set with a CI over seeds and prompts (1,2,3)")
    p.add_argument("--aligner", help="aligner: measure this trained Aligner instead of training one (its held-out "
                   "triples are read from ALIGNER.work/eval.jsonl)")
    p.add_argument("--model", default="asset:smollm2", help="model path or asset (default asset:smollm2)")
    p.add_argument("--backend", default=["transformers"], type=_listed(("transformers", "vllm"), "backend"),
                   help="generate: comma-separated backends measured side by side (transformers,vllm)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="generate: the model's dtype (default bfloat16); train: the trainer's param_dtype (default: "
                   "the recipe's training section's)")
    p.add_argument("--prompts", type=int, default=32, help="generate: prompts per measurement")
    p.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 16],
                   help="generate: comma-separated batch sizes")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--method", type=_listed(("sft", "dpo"), "method"), default=["sft"],
                   help="train: comma-separated methods measured one after the other (sft,dpo)")
    p.add_argument("--rows", type=int, default=64, help="train: rows of synthetic data")
    p.add_argument("--micro-batch", type=int, default=4, help="train: samples per micro-batch")
    p.add_argument("--peer", action="store_true", help="train: also run each method through OpenRLHF's own CLI "
                   "(openrlhf.cli.train_sft/train_dpo) on the same rows and flags, side by side (one rank; bf16 or "
                   "fp16, the CLI's dtypes)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)
    from w2s.aligner.cli import _collect_overrides

    _collect_overrides(p)
