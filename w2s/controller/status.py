"""``w2s status RUN_DIR``: rounds, stages (done or not) and the latest metrics of a run."""

from __future__ import annotations

from pathlib import Path

from w2s.controller.report import latest_metrics
from w2s.controller.rundir import read_state
from w2s.errors import RunDirError

STAGE_ORDER = ["aligner", "eval-answers", "generate", "correct", "data", "train"]


def print_status(run_dir: str) -> int:
    path = Path(run_dir)
    if not (path / "run.json").exists():
        raise RunDirError(f"{path} is not a w2s run directory (no run.json)")
    info = read_state(path / "run.json")
    print(f"run {path.resolve()}\n  recipe {info['recipe']}  attempts {len(info['attempts'])}  "
          f"last started {info['attempts'][-1]['started']}")
    folders = [path / "aligner"] if (path / "aligner").exists() else []
    folders += sorted(p for p in path.glob("round-*") if p.is_dir())
    for folder in folders:
        stages = [folder] if folder.name == "aligner" else sorted(
            (p for p in folder.iterdir() if p.is_dir()),
            key=lambda p: STAGE_ORDER.index(p.name) if p.name in STAGE_ORDER else 99)
        for stage in stages:
            manifest = stage / "manifest.json"
            if manifest.exists():
                m = read_state(manifest)
                state = f"done in {m.get('seconds', 0):.0f} s"
            else:
                state = "not finished"
            label = stage.name if folder.name == "aligner" else f"{folder.name}/{stage.name}"
            print(f"  {label:<28} {state}")
    evals = [m for m in latest_metrics(path) if str(m.get("stage", "")).startswith("eval-vs-")]
    for m in sorted(evals, key=lambda m: (m["round"], m["compare_to"])):
        print(f"  round {m['round']} vs {m['compare_to']:<8} W/L/T {m['wins']}/{m['losses']}/{m['ties']}  "
              f"win-loss {m['win_minus_loss']:+.1f}%  mean score {m['mean_score']:.4f}")
    return 0
