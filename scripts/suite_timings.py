"""The test suite's timings as a results file that the README quotes: read a `make test` log, write Markdown.

    make test 2>&1 | tee test.log
    .venv/bin/python scripts/suite_timings.py test.log --write docs/results/test-suite.md

It measures nothing itself: it reads what pytest printed (its last summary line, its slowest durations) and what
scripts/bootstrap.sh and scripts/test.sh printed (the set-up time, the revision tested), so the README's numbers
are the log's and tests/test_results.py holds the README to them.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

SUMMARY = re.compile(r"^=+ (?P<counts>.+?) in (?P<seconds>[\d.]+)s(?: \([\d:]+\))? =+$")
DURATION = re.compile(r"^(?P<seconds>[\d.]+)s (?P<phase>call|setup|teardown)\s+(?P<test>\S+)$")
SETUP = re.compile(r"environment ready in (?P<seconds>\d+) s")
REVISION = re.compile(r"pytest, the whole suite .*git (?P<revision>[0-9a-f]{7,40})")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LogError(ValueError):
    pass


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"  # as pytest shows it


def read_log(text: str, name: str) -> dict:
    """The suite's figures from a `make test` log; :class:`LogError` naming the log when it holds no whole run."""
    lines = [ANSI.sub("", line).rstrip() for line in text.splitlines()]
    summaries = [m for m in map(SUMMARY.match, lines) if m and ("passed" in m["counts"] or "failed" in m["counts"])]
    if not summaries:
        raise LogError(f"{name}: no pytest summary line (`=== N passed ... in S s ===`): give the log of a whole "
                       "`make test` (make test 2>&1 | tee test.log)")
    if not any("the whole suite" in line for line in lines):
        raise LogError(f"{name}: not a `make test` log (scripts/test.sh's line `pytest, the whole suite` is missing); "
                       "the fast tier's timings are not the suite's")
    slowest = [m.groupdict() for m in map(DURATION.match, lines) if m]
    setup = next((int(m["seconds"]) for m in map(SETUP.search, lines) if m), None)
    revision = next((m["revision"] for m in map(REVISION.search, lines) if m), None)
    return {"counts": summaries[-1]["counts"], "seconds": float(summaries[-1]["seconds"]), "setup_s": setup,
            "revision": revision, "slowest": slowest}


def markdown(figures: dict, log_name: str, top: int = 15) -> str:
    from w2s.results import machine

    setup = (f"environment set-up from nothing {figures['setup_s']} s" if figures["setup_s"] is not None else
             "the environment was already set up")
    lines = ["# Results: the test suite", "",
             f"Read by `scripts/suite_timings.py {log_name}` on {time.strftime('%Y-%m-%d %H:%M')} from the log of "
             f"`make test` at git {figures['revision'] or '(not in the log)'}; read on {machine()}.", "",
             f"pytest: **{figures['counts']}** in **{_minutes(figures['seconds'])}** ({figures['seconds']:.0f} s); "
             f"{setup}.", "",
             "The slowest, under two-at-a-time load (group: the xdist group the test runs in, see tests/conftest.py):",
             "", "| seconds | phase | test | group |", "|---|---|---|---|"]
    for row in figures["slowest"][:top]:
        test, _, group = row["test"].partition("@")
        lines.append(f"| {float(row['seconds']):.0f} | {row['phase']} | `{test}` | {group or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="what `make test` printed")
    parser.add_argument("--write", type=Path, required=True, help="the results file, e.g. docs/results/test-suite.md")
    args = parser.parse_args(argv)
    try:
        figures = read_log(args.log.read_text(errors="replace"), str(args.log))
    except (OSError, LogError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from w2s.data.files import atomic_write_text

    atomic_write_text(args.write, markdown(figures, args.log.name))
    print(f"wrote {args.write}: {figures['counts']} in {_minutes(figures['seconds'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
