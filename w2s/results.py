"""Measured results as Markdown files (``w2s bench loop|aligner|generate|train --write PATH``): what a README or a
paper quotes, written by the command that measured it, never copied by hand. ``tests/test_results.py`` fails when a
number the README quotes from such a file is not in it.

A run's file (``bench loop``) holds, from the run directory alone: its recipe, w2s version and git revision, the
machine; the evaluation set's role and its overlap counts as checked before the run; the Aligner's own effect on
each set; each round's policy against the initial and the previous one, the length of the answers judged and what
each round trained on (answers and corrections cut off, copied); under RLHF, each round's PPO figures (steps,
reward, rollout and training speed, weight-sync time); and where the run's time went. ``bench aligner``'s holds
which Aligner was measured and its rows; ``bench generate`` and ``bench train`` theirs, with what each column
means.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any

from w2s.data.files import atomic_write_text


def machine() -> str:
    """This machine in a few words: cores, CPU model and whether it computes bfloat16 natively, memory, OS."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    cpu = ", ".join(x for x in (model or platform.machine(), bf16_support(flags)) if x)
    return f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB memory, {platform.system()}"


def bf16_support(flags: set[str]) -> str:
    """Whether a CPU with these ``/proc/cpuinfo`` flags multiplies bfloat16 natively (AMX, AVX-512 BF16) or
    emulates it, which makes bfloat16 far slower than float32 there and timings of the two incomparable."""
    if not flags:
        return ""
    if "amx_bf16" in flags:
        return "AMX bf16"
    if "avx512_bf16" in flags:
        return "AVX-512 BF16"
    return "no native bf16"


def _row(m: dict[str, Any], label: str) -> str:
    return (f"| {label} | {m['judge']} | {m['n']} | {m['omega']:+.1f} | [{m['ci_low']:+.1f}, {m['ci_high']:+.1f}] | "
            f"{m['wins']}/{m['losses']}/{m['ties']} | {m['p_value']:.3g} |")


HEAD = "| set or comparison | judge | N | ω (%) | 95% CI | W/L/T | p |\n|---|---|---|---|---|---|---|"


def _as_named(path: Path) -> Path:
    """A path under the working directory as the user would name it (relative); others as given."""
    with contextlib.suppress(ValueError):
        return path.resolve().relative_to(Path.cwd().resolve())
    return path


def _run_dir_named(run_dir: Path) -> str:
    """The run directory, without a path of this machine's: relative to the working directory when under it,
    else only its name."""
    named = _as_named(run_dir)
    return f"`{named}`" if not named.is_absolute() else f"`{run_dir.name}` (outside the checkout)"


def _written_by(command: str, version: str | None = None, revision: str | None = None) -> str:
    """A results file's provenance: the command, when, w2s's version and git revision (this checkout's unless a run
    recorded its own), the machine."""
    if version is None:
        from w2s import __version__ as version
    if revision is None:
        from w2s.rundir import git_revision

        revision = git_revision()
    return (f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M')}; w2s {version}, git {revision}; "
            f"{machine()}.")


def command_line() -> str:
    """The w2s command this process runs, as typed (what a results file says measured it)."""
    import shlex
    import sys

    return shlex.join(["w2s", *sys.argv[1:]])


# Written into the run dir by `w2s bench loop` when it runs the recipe: the machine's memory in use while it ran.
MACHINE_MEMORY = "bench-loop-memory.json"


def results_markdown(run_dir: Path, command: str, times: list[dict[str, Any]]) -> str:
    """The file's text; ``times``: where the run's time went (:func:`w2s.bench.loop.loop_times`'s rows)."""
    from w2s.eval.report import markdown_table
    from w2s.report import (
        answers_judged,
        answers_table,
        corrected_answers,
        corrected_table,
        eval_rows,
        eval_set_note,
        latest_metrics,
    )
    from w2s.rundir import read_state

    info = read_state(run_dir / "run.json")
    last = info["attempts"][-1]
    metrics = latest_metrics(run_dir)
    aligner = sorted((m for m in metrics if str(m.get("stage", "")).startswith(("aligner-eval/",
                                                                                "aligner-eval-prompts/"))),
                     key=lambda m: (m.get("round") or 0, m["stage"], m["judge"]))
    evals = eval_rows(metrics)
    lines = [f"# Results: {_as_named(Path(info['recipe']))}", "",
             f"{_written_by(command, last['w2s_version'], last['git_revision'])} Run directory: "
             f"{_run_dir_named(run_dir)}.", ""]
    measured = [m for m in metrics if str(m.get("stage", "")).startswith(("eval-vs-", "aligner-eval-prompts/"))]
    if measured:
        lines += [eval_set_note(run_dir, measured), ""]
    if aligner:
        lines += ["## The Aligner's own effect (its corrections against the original answers)", "", HEAD]
        lines += [_row(m, m.get("set", m["stage"].split("/")[0])) for m in aligner] + [""]
    if evals:
        lines += ["## Each round's policy", "", HEAD]
        lines += [_row(m, f"round {m['round']} vs {m['compare_to']}") for m in evals] + [""]
    answered, corrected = answers_judged(run_dir), corrected_answers(run_dir)
    if answered:
        lines += ["## The answers judged", "", *markdown_table(answers_table(answered)), ""]
    if corrected:
        lines += ["## What each round trained on", "", *markdown_table(corrected_table(corrected)), ""]
    ppo = ppo_rows(run_dir)
    if ppo:
        lines += ["## PPO", "", "OpenRLHF's own step timings (its TensorBoard scalars), averaged over the round's "
                  "steps; the engine's side of each weight sync from `weight_sync.jsonl` (CPU runs).", "",
                  "| round | steps | reward first -> last | rollout tokens/s | training samples/s | "
                  "weight sync s/step (trainer) | weight sync s (engine, mean) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['round']} | {r['steps']} | {r['reward']} | {r['rollout_tokens_per_s']} | "
                  f"{r['train_samples_per_s']} | {r['weight_sync_s_per_step']} | {r['engine_sync_s']} |"
                  for r in ppo] + [""]
    if times:  # each stage (the Aligner's training among them), then the totals
        lines += ["## Where the time went", "", "| part | wall (s) | work (s) | start-up and orchestration (s) |",
                  "|---|---|---|---|"]
        lines += [f"| {r['stage']} | {r['wall_s']} | {r['work_s']} | {r['startup_and_orchestration_s']} |"
                  for r in times] + [""]
        lines += ["## Role processes and refit checks", "",
                  "*The role groups each stage started (a group: every rank of a role; one kept for the run starts "
                  "once) and the refit checks of the weights it took in place (how many passed, the largest mean "
                  "difference of log-probabilities).*", "", "| part | roles started | refit checks |", "|---|---|---|"]
        lines += [f"| {r['stage']} | {r['roles_started']} | {r['refit_checks']} |" for r in times] + [""]
    memory = run_dir / MACHINE_MEMORY
    if memory.exists():
        m = read_state(memory)
        lines += ["## Memory", "", f"Memory in use on the machine (every process, sampled every {m['every_s']:g} s "
                  f"by `w2s bench loop` while the run ran): at most {m['peak_gib']} GiB; {m['before_gib']} GiB before "
                  "it started.", ""]
    return "\n".join(lines)


def ppo_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Each PPO round's figures (its train stage's manifest) and the engine's weight syncs (``weight_sync.jsonl``)."""
    from w2s.backends.ppo_metrics import read_syncs
    from w2s.report import train_manifests

    rows = []
    for k, stage_dir, manifest in train_manifests(run_dir):
        m = manifest.get("metrics") or {}
        if not m.get("ppo_steps"):
            continue
        syncs = read_syncs(stage_dir)
        rows.append({"round": k, "steps": m["ppo_steps"],
                     "reward": f"{m.get('ppo_reward_first', float('nan')):.3g} -> "
                               f"{m.get('ppo_reward_last', float('nan')):.3g}",
                     "rollout_tokens_per_s": round(m.get("ppo_rollout_tokens_per_s", 0.0), 1),
                     "train_samples_per_s": round(m.get("ppo_train_samples_per_s", 0.0), 2),
                     "weight_sync_s_per_step": round(m.get("ppo_weight_sync_s_per_step", 0.0), 3),
                     "engine_sync_s": round(sum(s["seconds"] for s in syncs) / len(syncs), 3) if syncs else "-"})
    return rows


def write_results(run_dir: Path, path: Path, command: str, times: list[dict[str, Any]]) -> Path:
    atomic_write_text(path, results_markdown(run_dir, command, times))
    return path


def aligner_results_markdown(recipe: str, command: str, cfg: Any, aligner: Path, rows: list[dict[str, Any]]) -> str:
    """``w2s bench aligner --write``'s file: which Aligner (its triples by content, its training), the evaluation
    set and its role as configured, and the measured rows (:func:`w2s.bench.aligner.bench_aligner`'s)."""
    import json

    meta = json.loads((aligner / "w2s_aligner.json").read_text(encoding="utf-8"))
    data, train = meta.get("data") or {}, meta.get("train") or {}
    role = ("a test set (eval.role=test)" if cfg.eval.role == "test" else
            "a dev set (eval.role=dev): this benchmark is run to choose, so these are not test results")
    lines = [f"# Results: the Aligner of {recipe}", "", _written_by(command), "",
             f"The Aligner: trained on {data.get('train', '?')} triples of `{data.get('source', '?')}` (sha256 "
             f"{str(meta.get('data_sha256', ''))[:12]}), {data.get('eval', '?')} whole questions held out; "
             f"{train.get('epochs', '?')} epochs at lr {train.get('lr', '?')}, LoRA rank "
             f"{train.get('lora_rank', '-')}, {meta.get('warmup_fraction', 0):.0%} identity warm-up. The evaluation "
             "prompts: "
             f"`{cfg.eval.prompts.path}`, {role}.", ""]
    seeds = "seed" in rows[0]  # --seeds: a row per seed and set, then the seeds together ("all")
    if seeds:
        lines += ["One Aligner per seed (run.seed; the training above is the first seed's). The rows of seed `all`: "
                  "the mean of the seeds' ω, its 95% CI from a two-level bootstrap (seeds, then each seed's prompts), "
                  "the outcomes of all seeds counted together.", ""]
    first = ["seed"] if seeds else []
    lines += [_table_row([*first, "set", "N", "ω (%)", "95% CI", "W/L/T", "p", "copied", "cut off"]),
              "|" + "---|" * (len(first) + 8)]
    lines += [_table_row([*([r["seed"]] if seeds else []), r["set"], r["n"], f"{r['omega']:+.1f}", r["ci95"],
                          r["W/L/T"], "-" if r["p"] is None else f"{r['p']:.3g}", f"{r['copy_rate']:.1%}",
                          f"{r['cut_off_rate']:.1%}"]) for r in rows]
    by_category = [([r["seed"]] if seeds else [], r["set"], cat, c) for r in rows
                   for cat, c in (r.get("by_category") or {}).items()]
    if by_category:
        lines += ["", "By category of the prompts (the categories the set's rows name):", "",
                  _table_row([*first, "set", "category", "N", "ω (%)", "95% CI", "W/L/T"]),
                  "|" + "---|" * (len(first) + 6)]
        lines += [_table_row([*seed, name, cat, c["n"], f"{c['omega']:+.1f}", c["ci95"], c["W/L/T"]])
                  for seed, name, cat, c in by_category]
    return "\n".join(lines) + "\n"


def throughput_results_markdown(what: str, command: str, rows: list[dict[str, Any]], about: str) -> str:
    """``w2s bench generate|train --write``'s file: the command, w2s's version and revision, the machine, what the
    columns mean, and the measured rows as the command printed them."""
    keys = list(rows[0]) if rows else []
    lines = [f"# Results: w2s bench {what}", "", _written_by(command), "", about, "", _table_row(keys),
             "|" + "---|" * len(keys)]
    lines += [_table_row(["-" if r.get(k) is None else r[k] for k in keys]) for r in rows]
    return "\n".join(lines) + "\n"


def interpret_results_markdown(command: str, folder: Path) -> str:
    """``w2s interpret --write``'s file: the command, w2s's version and revision, the machine, which Aligner, each
    part measured in ``folder`` with the command and seconds that measured it, and the report's tables (its figures
    stay in the folder's report)."""
    import json

    from w2s.eval.html import Figure, Section
    from w2s.eval.report import render_markdown
    from w2s.interpret.report import interpret_sections

    parts = {name: json.loads((folder / f"{name}.json").read_text(encoding="utf-8")) for name in ("lat", "control")
             if (folder / f"{name}.json").exists()}
    aligner = next(iter(parts.values()), {}).get("aligner", "?")
    measured = "; ".join(f"`{name}` by `{p.get('command', '?')}` in {p.get('seconds', '?')} s"
                         for name, p in parts.items())
    header = (f"{_written_by(command)} The Aligner: {_run_dir_named(Path(aligner))}. Measured in "
              f"{_run_dir_named(folder)}: {measured} (each part's seconds include its corrector actor's start).")
    sections = [Section(s.title, [b for b in s.blocks if not isinstance(b, Figure)])
                for s in interpret_sections(folder)]
    return render_markdown("Results: w2s interpret", sections, subtitle=header) + "\n"


def _table_row(cells: list[Any]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


def quoted_blocks(readme: str) -> list[tuple[str, str]]:
    """(results file, quoted text) of every ``<!-- results: FILE.md -->`` ... ``<!-- /results -->`` block."""
    import re

    return re.findall(r"<!-- results: (\S+\.md) -->(.*?)<!-- /results -->", readme, flags=re.S)


def numbers(text: str) -> list[str]:
    """The numbers a text quotes, as written: negatives with their sign (a minus sign read as a hyphen), decimals
    as given (a plus sign dropped)."""
    import re

    return re.findall(r"-?\d+(?:\.\d+)?", text.replace("−", "-").replace("+", ""))


def unquotable(readme: str, root: Path) -> list[str]:
    """Each number a README block quotes that its results file does not hold (empty: every quote holds)."""
    missing = []
    for path, block in quoted_blocks(readme):
        have = set(numbers((root / path).read_text()))
        missing += [f"{n} (quoted from {path})" for n in numbers(block) if n not in have]
    return missing

