"""``w2s interpret lat|control``: the Aligner's correction representation (see :mod:`w2s.interpret.pipeline`)."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from w2s.aligner.cli import _collect_overrides

    p = subparsers.add_parser("interpret", help="read the Aligner's correction representation (LAT scans) and "
                              "steer it (representation control)",
                              description="LAT scans and representation control of an Aligner (paper §3.4).")
    sub = p.add_subparsers(dest="interpret_command", metavar="{lat,control}")
    sub.required = True
    for name, helptext in (("lat", "reading vectors per layer, held-out separation and the LAT heatmaps"),
                           ("control", "add alpha x V_c while correcting; Levenshtein ratio against alpha")):
        c = sub.add_parser(name, help=helptext, description=helptext)
        c.add_argument("recipe", help="recipe (e.g. interpret/quickstart)")
        c.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (interpret.*, ...)")
        c.add_argument("--aligner", help="the Aligner (default: the recipe's model.aligner.path)")
        c.add_argument("--output", help="output folder (default: RUN_DIR/interpret when run.dir is set)")
        c.add_argument("--write", help="also write the parts measured in the output folder so far (their tables, "
                       "the commands and seconds that measured them) to this Markdown results file")
        c.set_defaults(func=cmd_interpret, what=name)
        _collect_overrides(c)
    return p


def cmd_interpret(args: argparse.Namespace) -> int:
    return run_interpret(args.recipe, list(args.overrides), args.what, aligner=args.aligner, output=args.output,
                         write=args.write)


def run_interpret(recipe: str | None, overrides: list[str], what: str, *, aligner: str | None = None,
                  output: str | None = None, write: str | None = None) -> int:
    """One half of the interpret job (``what``: ``lat`` or ``control``) on ``aligner`` (default the recipe's
    ``model.aligner.path``) into ``output`` (default ``RUN_DIR/interpret``); the exit status."""
    from w2s.aligner.cli import compose
    from w2s.assets import resolve_model_path
    from w2s.console import say
    from w2s.data.files import WriterLock
    from w2s.errors import W2SError
    from w2s.interpret.pipeline import run_control, run_lat
    from w2s.roles.on_demand import ServicesOnDemand

    cfg = compose(recipe, overrides, job="interpret")
    aligner = aligner or cfg.model.aligner.path
    if not aligner:
        raise W2SError("give --aligner DIR or model.aligner.path")
    if not output and not cfg.run.dir:
        raise W2SError("give --output DIR (or run.dir, to write into RUN_DIR/interpret)")
    out = Path(output) if output else Path(cfg.run.dir) / "interpret"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with WriterLock(out / ".w2s-interpret.lock", f"interpret folder {out}"), contextlib.ExitStack() as stack:
        aligner = resolve_model_path(aligner, progress=say)
        # The hooks run in the role services' corrector actor, as a round's corrections do (logs in OUT/logs).
        services = ServicesOnDemand(stack, cfg, out.resolve() / "logs")
        run = run_lat if what == "lat" else run_control
        services.retrying(f"interpret {what}", lambda: run(cfg, aligner, out, say, services))
        html = write_interpret_report(out)
    say(f"interpret {what}: done in {time.time() - t0:.0f} s; report: {html}")
    if write:
        from w2s.data.files import atomic_write_text
        from w2s.results import command_line, interpret_results_markdown

        atomic_write_text(Path(write), interpret_results_markdown(command_line(), out))
        say(f"results: {write}")
    run_dir = out.parent
    if (run_dir / "run.json").exists():
        _refresh_run_report(run_dir)
    return 0


def write_interpret_report(out: Path) -> Path:
    from w2s.eval.report import write_reports
    from w2s.interpret.report import interpret_sections

    html, _ = write_reports(out, "w2s interpret: the Aligner's correction representation", interpret_sections(out),
                            subtitle=f"Written {time.strftime('%Y-%m-%d %H:%M')}")
    return html


def _refresh_run_report(run_dir: Path) -> None:
    """The run's report gains the interpretability section, unless the run is being written right now."""
    from w2s.console import say
    from w2s.data.files import WriterLock
    from w2s.errors import W2SError
    from w2s.report import write_report

    try:
        with WriterLock(run_dir / ".w2s.lock", f"run directory {run_dir}"):
            write_report(run_dir)
        say(f"run report updated: {run_dir / 'report.html'}")
    except W2SError:
        say(f"{run_dir} is being written by its run; its report gains this section when the run ends")
