"""``w2s popalign RECIPE [key=value ...]``: build a PopAlign preference dataset (the recipe runs as a popalign job)."""

from __future__ import annotations

import argparse


def cmd_popalign(args: argparse.Namespace) -> int:
    """Load the recipe as a ``popalign`` job and run it exactly as ``w2s run`` would."""
    from w2s.config.compose import find_recipe, load_config
    from w2s.controller.entry import run_job

    cfg = load_config(args.recipe, ["job=popalign", *args.overrides], job="popalign")
    return run_job(cfg, recipe=str(find_recipe(args.recipe)), overrides=list(args.overrides))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``popalign`` subcommand."""
    text = ("build a PopAlign preference dataset (prefix, demon, elicitive, nparam, leaderboard, refine and aligner "
            "contrasts) and optionally train on it with DPO")
    p = subparsers.add_parser("popalign", help=text, description=text)
    p.add_argument("recipe", help="recipe file, or a name under recipes/ (e.g. tiny/popalign)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")
    p.set_defaults(func=cmd_popalign)
    return p
