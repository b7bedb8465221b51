"""The ``w2s`` command line. Subcommands load lazily, so ``w2s validate`` never imports torch or Ray."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import time
from collections.abc import Callable

from w2s import __version__
from w2s.errors import ConfigError, W2SError
from w2s.seeds import parse_seeds
from w2s.stopping import EXIT_STOPPED, StopRequested, stop_signals

EXIT_CONFIG = 2

# Subcommands that live in their own modules: (module, function adding the parser).
_PLUGIN_PARSERS = [
    ("w2s.aligner.cli", "add_parser"),
    ("w2s.launch.slurm", "add_parser"),
    ("w2s.launch.plan", "add_parser"),
    ("w2s.bench", "add_parser"),
    ("w2s.eval.cli", "add_parser"),
    ("w2s.interpret.cli", "add_parser"),
]


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe file, or a name under recipes/ (e.g. quickstart, tiny/dpo)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied last")


def cmd_validate(args: argparse.Namespace) -> int:
    from w2s.config.compose import find_recipe, load_config

    load_config(args.recipe, args.overrides)
    print(f"{find_recipe(args.recipe)}: valid")
    return 0


def cmd_print_config(args: argparse.Namespace) -> int:
    from w2s.config.compose import load_config, to_yaml

    print(to_yaml(load_config(args.recipe, args.overrides)), end="")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from w2s.config.compose import RECIPES_DIR, list_recipe_files, recipe_description

    files = list_recipe_files()
    width = max((len(str(p.relative_to(RECIPES_DIR).with_suffix(""))) for p in files), default=0)
    for p in files:
        name = str(p.relative_to(RECIPES_DIR).with_suffix(""))
        print(f"{name:<{width}}  {recipe_description(p)}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from w2s.config.explain import explain

    print(explain(args.key))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from w2s.config.compose import find_recipe, load_config
    from w2s.controller.entry import run_job

    if args.seeds:
        from w2s.controller.entry import run_seeds

        return run_seeds(args.recipe, list(args.overrides), args.seeds)
    cfg = load_config(args.recipe, args.overrides)
    if cfg.job == "interpret":  # in this process, into RUN_DIR/interpret: no run of its own (w2s.controller.jobs)
        from w2s.interpret.cli import run_interpret

        for what in ("lat", "control"):
            run_interpret(args.recipe, list(args.overrides), what)
        return 0
    return run_job(cfg, recipe=str(find_recipe(args.recipe)), overrides=list(args.overrides))


def cmd_report(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from w2s.errors import RunDirError

    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:
        if not (d / "run.json").exists():
            raise RunDirError(f"{d} is not a w2s run directory (no run.json)")
    if len(dirs) == 1 and not args.output:
        from w2s.report import write_report

        print(f"report: {write_report(dirs[0]).with_suffix('.html')}")
        return 0
    from w2s.seeds import write_seeds_report

    out = Path(args.output) if args.output else Path(os.path.commonpath([d.resolve() for d in dirs]))
    print(f"report over {len(dirs)} runs: {write_seeds_report(dirs, out)}")
    return 0


def cmd_popalign(args: argparse.Namespace) -> int:
    """The recipe as a ``popalign`` job, run exactly as ``w2s run`` runs it."""
    from w2s.config.compose import find_recipe, load_config
    from w2s.controller.entry import run_job

    cfg = load_config(args.recipe, ["job=popalign", *args.overrides], job="popalign")
    return run_job(cfg, recipe=str(find_recipe(args.recipe)), overrides=list(args.overrides))


def cmd_status(args: argparse.Namespace) -> int:
    from w2s.controller.status import print_status

    return print_status(args.run_dir)


def cmd_assets(args: argparse.Namespace) -> int:
    from pathlib import Path

    from w2s import assets

    if args.asset == "tiny":
        spec = assets.TINY_SPECS[f"tiny-{args.size}"]
        out = assets.build_tiny(args.out, hidden=args.hidden or spec.hidden, layers=args.layers or spec.layers,
                                heads=args.heads or spec.heads, kv_heads=args.kv_heads or spec.kv_heads,
                                seed=spec.seed)
    elif args.asset == "smollm2":
        out = assets.build_smollm2(args.out) if args.out else assets.ensure_asset("smollm2")
    else:  # prepare: every asset into the cache
        for name in assets.ASSET_NAMES:
            print(f"{name}: {assets.ensure_asset(name)}")
        return 0
    print(f"asset written to {Path(out).resolve()}")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="w2s", description="Weak-to-strong alignment: Aligner correction, weak-to-strong rounds, PopAlign.",
        epilog="Config values are set as key=value after the recipe (e.g. train.method=sft); "
               "`w2s explain KEY` documents any key.")
    parser.add_argument("--version", action="version", version=f"w2s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: dict[str, argparse.ArgumentParser] = {}

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        commands[name] = p
        return p

    run = add("run", cmd_run, "run a recipe (its `job`: the weak-to-strong loop, Aligner training or PopAlign)")
    _recipe_args(run)
    from w2s.aligner.cli import _collect_overrides

    _collect_overrides(run)  # key=value after --seeds too
    run.add_argument("--seeds", type=parse_seeds, help="run the recipe once per seed (e.g. 1,2,3), one after the "
                     "other, each in RUN_DIR/seed-N with run.seed=N, then write the report over them into RUN_DIR")
    report = add("report", cmd_report, "write a run's report again, or the report over several runs of one recipe "
                 "(its seeds): mean omega, a CI over seeds and prompts, each seed's omega")
    report.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    report.add_argument("--output", help="with several runs: the folder for the report (default: their common "
                        "parent)")
    _recipe_args(add("popalign", cmd_popalign, "build a PopAlign preference dataset (prefix, demon, elicitive, nparam, "
                     "leaderboard, refine and aligner contrasts) and optionally train on it with DPO"))
    _recipe_args(add("validate", cmd_validate, "check a recipe and report every problem at once (exit 2 if invalid)"))
    _recipe_args(add("print-config", cmd_print_config, "print the fully resolved config of a recipe"))
    add("recipes", cmd_recipes, "list the runnable recipes with their descriptions")
    add("explain", cmd_explain, "describe a config key or section").add_argument("key", nargs="?", default="")
    add("status", cmd_status, "show a run's rounds, stages and metrics").add_argument("run_dir")
    p = add("assets", cmd_assets, "build the offline model assets")
    p.add_argument("asset", choices=["tiny", "smollm2", "prepare"],
                   help="tiny: a random tiny Llama; smollm2: SmolLM2-135M-Instruct; prepare: build all into the cache")
    p.add_argument("--out", help="output directory (smollm2 without --out: the cache)")
    p.add_argument("--size", choices=["weak", "mid", "strong"], default="weak", help="tiny: which preset to start from")
    p.add_argument("--hidden", type=int, help="tiny: hidden size")
    p.add_argument("--layers", type=int, help="tiny: number of layers")
    p.add_argument("--heads", type=int, help="tiny: attention heads")
    p.add_argument("--kv-heads", type=int, help="tiny: key/value heads")

    for module, func in _PLUGIN_PARSERS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue  # that feature is not part of this installation
            raise
        getattr(mod, func)(sub)
    commands.update({name: p for name, p in sub.choices.items() if name not in commands})
    return parser, commands


# What to do about the operating-system errors a user can cause (a path, a permission, a full disk).
_OS_FIXES = {
    errno.EACCES: "check the permissions of that path, or choose another location",
    errno.EPERM: "check the permissions of that path, or choose another location",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOSPC: "the disk is full; free some space (or point run.dir / --output elsewhere) and re-run to resume",
    errno.EDQUOT: "the disk quota is exceeded; free some space and re-run to resume",
    errno.EISDIR: "give a file there, not a directory",
    errno.ENOTDIR: "a part of that path is a file, not a directory",
    errno.ENOENT: "check the path",
}


def os_error_message(e: OSError) -> str:
    """One line: the path, what went wrong, and the fix."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f) or "a file operation"
    fix = _OS_FIXES.get(e.errno or -1, "")
    return f"{where}: {e.strerror or e}" + (f"; {fix}" if fix else "")


def main(argv: list[str] | None = None) -> int:
    code = _run_command(argv)
    head = sys.modules.get("w2s.head")  # (imported only by commands that start Ray)
    if head is not None and head.abandoned():  # stopped with its Ray head gone: Ray's teardown would wait on it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_command(argv: list[str] | None) -> int:
    import warnings

    # torch warns, on its import, that a package it imports itself is deprecated: nothing a user can act on.
    warnings.filterwarnings("ignore", message="The pynvml package is deprecated", category=FutureWarning)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flags = [u for u in unknown if u.startswith("-")]
        hint = "; ".join(f"{f}: config values are set as key=value, e.g. {f.lstrip('-').split('=')[0]}=VALUE"
                         for f in flags) or f"unexpected arguments: {' '.join(unknown)}"
        commands.get(args.command, parser).error(hint)
    t0 = time.time()
    try:
        with stop_signals():
            return int(args.func(args) or 0)
    except StopRequested as e:
        print(f"stopped during {e} after {time.time() - t0:.0f} s; what was finished is kept: re-run the same "
              "command to resume", file=sys.stderr)
        return EXIT_STOPPED
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_CONFIG
    except W2SError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"error: {os_error_message(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
