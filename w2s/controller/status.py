"""``w2s status RUN_DIR``: rounds, stages (done or not) and the latest metrics of a run."""

from __future__ import annotations

from pathlib import Path

from w2s.errors import RunDirError
from w2s.report import eval_rows, eval_set_note, latest_metrics, pgr_rows
from w2s.rundir import read_state
from w2s.stages import RUN_ORDER


def print_status(run_dir: str) -> int:
    path = Path(run_dir)
    if not (path / "run.json").exists():
        raise RunDirError(f"{path} is not a w2s run directory (no run.json)")
    info = read_state(path / "run.json")
    print(f"run {path.resolve()}\n  recipe {info['recipe']}  attempts {len(info['attempts'])}  "
          f"last started {info['attempts'][-1]['started']}")
    folders = [path / name for name in ("aligner", "aligner-eval", "aligner-eval-prompts") if (path / name).exists()]
    folders += sorted(p for p in path.glob("round-*") if p.is_dir())
    for folder in folders:
        stages = [folder] if not folder.name.startswith("round-") else sorted(
            (p for p in folder.iterdir() if p.is_dir() and p.name != "compare"),  # compare: the eval-vs outputs
            key=lambda p: RUN_ORDER.index(p.name) if p.name in RUN_ORDER else len(RUN_ORDER))
        for stage in stages:
            manifest = stage / "manifest.json"
            if manifest.exists():
                m = read_state(manifest)
                state = f"done in {m.get('seconds', 0):.0f} s"
            else:
                state = "not finished"
            label = stage.name if not folder.name.startswith("round-") else f"{folder.name}/{stage.name}"
            print(f"  {label:<28} {state}")
    metrics = latest_metrics(path)
    for m in sorted((m for m in metrics if str(m.get("stage", "")).startswith(("aligner-eval/",
                                                                                "aligner-eval-prompts/"))),
                    key=lambda m: (m["stage"], m["judge"])):
        where = f"round {m['round']} " if m.get("round") else ""
        which = "eval prompts" if m["stage"].startswith("aligner-eval-prompts/") else "held-out triples"
        print(f"  {where}aligner vs original ({which})  {m['judge']:<14} omega {m['omega']:+.1f}% "
              f"[{m['ci_low']:+.1f}, {m['ci_high']:+.1f}]  W/L/T {m['wins']}/{m['losses']}/{m['ties']}")
    measured = [m for m in metrics if str(m.get("stage", "")).startswith(("eval-vs-", "aligner-eval-prompts/"))]
    if measured:
        print(f"  {eval_set_note(path, measured)}")
    ceiling = sorted((m for m in metrics if str(m.get("stage", "")).startswith("ceiling-vs-")),
                     key=lambda m: (m["round"], m["judge"]))
    for m in eval_rows(metrics) + ceiling:
        vs = "ceiling" if m["stage"].startswith("ceiling-") else f"vs {m['compare_to']}"
        print(f"  round {m['round']} {vs:<11} {m['judge']:<14} omega {m['omega']:+.1f}% "
              f"[{m['ci_low']:+.1f}, {m['ci_high']:+.1f}]  W/L/T {m['wins']}/{m['losses']}/{m['ties']}")
    for m in pgr_rows(metrics):
        print(f"  round {m['round']} PGR       {m['judge']:<14} {m['pgr']:+.2f} [{m['pgr_ci_low']:+.2f}, "
              f"{m['pgr_ci_high']:+.2f}]  (w2s {m['omega_w2s']:+.1f}%, floor {m['omega_floor']:+.1f}%, ceiling "
              f"{m['omega_ceiling']:+.1f}%)")
    return 0
