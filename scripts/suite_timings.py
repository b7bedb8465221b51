"""The test suite's timings as a results file that the README quotes: read a `make test` (or `make check`) log,
write Markdown.

    make test 2>&1 | tee test.log
    .venv/bin/python scripts/suite_timings.py test.log --write docs/results/test-suite.md
    make check 2>&1 | tee check.log
    .venv/bin/python scripts/suite_timings.py check.log --tier check --write docs/results/check.md

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

# `=== 520 passed ... in 1462.09s (0:24:22) ===`; under -q (make check) undecorated.
SUMMARY = re.compile(r"^(?:=+ )?(?P<counts>\d.+?) in (?P<seconds>[\d.]+)s(?: \([\d:]+\))?(?: =+)?$")
DURATION = re.compile(r"^(?P<seconds>[\d.]+)s (?P<phase>call|setup|teardown)\s+(?P<test>\S+)$")
SETUP = re.compile(r"environment ready in (?P<seconds>\d+) s")
REVISION = re.compile(r"pytest, (?:the whole suite|fast tier) .*git (?P<revision>[0-9a-f]{7,40})")
# What scripts/test.sh prints as each tier starts, the command that runs it, and what the results file calls it.
TIERS = {"all": ("the whole suite", "make test", "the test suite"),
         "check": ("fast tier", "make check", "the fast tier (`make check`)")}
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LogError(ValueError):
    pass


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"  # as pytest shows it


def read_log(text: str, name: str, tier: str = "all") -> dict:
    """The suite's figures from a log of ``tier`` (``all``: `make test`, ``check``: `make check`); :class:`LogError`
    naming the log when it holds no whole run of that tier."""
    marker, command, _ = TIERS[tier]
    lines = [ANSI.sub("", line).rstrip() for line in text.splitlines()]
    summaries = [m for m in map(SUMMARY.match, lines) if m and ("passed" in m["counts"] or "failed" in m["counts"])]
    if not summaries:
        raise LogError(f"{name}: no pytest summary line (`=== N passed ... in S s ===`): give the log of a whole "
                       f"`{command}` ({command} 2>&1 | tee LOG)")
    if not any(f"pytest, {marker}" in line for line in lines):
        raise LogError(f"{name}: not a `{command}` log (scripts/test.sh's line `pytest, {marker}` is missing); "
                       "one tier's timings are not the other's (--tier)")
    slowest = [m.groupdict() for m in map(DURATION.match, lines) if m]
    setup = next((int(m["seconds"]) for m in map(SETUP.search, lines) if m), None)
    revision = next((m["revision"] for m in map(REVISION.search, lines) if m), None)
    return {"tier": tier, "counts": summaries[-1]["counts"], "seconds": float(summaries[-1]["seconds"]),
            "setup_s": setup, "revision": revision, "slowest": slowest}


def markdown(figures: dict, log_name: str, top: int = 15) -> str:
    from w2s.results import machine

    setup = (f"environment set-up from nothing {figures['setup_s']} s" if figures["setup_s"] is not None else
             "the environment was already set up")
    whole = figures["tier"] == "all"
    _, command, title = TIERS[figures["tier"]]
    flag = "" if whole else f" --tier {figures['tier']}"
    lines = [f"# Results: {title}", "",
             f"Read by `scripts/suite_timings.py {log_name}{flag}` on {time.strftime('%Y-%m-%d %H:%M')} from the log "
             f"of `{command}` at git {figures['revision'] or '(not in the log)'}; read on {machine()}.", "",
             f"pytest: **{figures['counts']}** in **{_minutes(figures['seconds'])}** ({figures['seconds']:.0f} s); "
             f"{setup}.", "",
             "The slowest, under two-at-a-time load (group: the xdist group the test runs in, see tests/conftest.py):"
             if whole else "The slowest, one test at a time:",
             "", "| seconds | phase | test | group |", "|---|---|---|---|"]
    for row in figures["slowest"][:top]:
        test, _, group = row["test"].partition("@")
        lines.append(f"| {float(row['seconds']):.0f} | {row['phase']} | `{test}` | {group or '-'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="what `make test` (or `make check`) printed")
    parser.add_argument("--tier", choices=sorted(TIERS), default="all", help="which run the log is of: all (make "
                        "test, default) or check (make check)")
    parser.add_argument("--write", type=Path, required=True, help="the results file, e.g. docs/results/test-suite.md")
    args = parser.parse_args(argv)
    try:
        figures = read_log(args.log.read_text(errors="replace"), str(args.log), args.tier)
    except (OSError, LogError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from w2s.data.files import atomic_write_text

    atomic_write_text(args.write, markdown(figures, args.log.name))
    print(f"wrote {args.write}: {figures['counts']} in {_minutes(figures['seconds'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
