"""``w2s bench loop``: where a run's time went, per stage and per round: wall seconds against work."""

from __future__ import annotations

import argparse
import json
import shlex
import tempfile
import time
from pathlib import Path
from typing import Any


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
        from w2s.data.files import atomic_write_json
        from w2s.memory import MachineMemory
        from w2s.results import MACHINE_MEMORY

        t0 = time.perf_counter()
        with MachineMemory() as memory:
            run = subprocess.run([sys.executable, "-m", "w2s.cli", "run", args.recipe, f"run.dir={run_dir}",
                                  *args.overrides])
        atomic_write_json(run_dir / MACHINE_MEMORY, {"before_gib": round(memory.before, 1),
                                                     "peak_gib": round(memory.peak, 1), "every_s": memory.every_s})
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
