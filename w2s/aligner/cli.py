"""``w2s aligner train|correct|prompt``: train an Aligner, correct a file of answers, show a rendered prompt.

Wire into the top-level parser with ``w2s.aligner.cli.add_parser(subparsers)``; each subcommand sets
``func`` (called with the parsed namespace; returns an exit status).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``aligner`` and its subcommands on an argparse subparsers object."""
    p = subparsers.add_parser("aligner", help="Train an Aligner, correct answers with it, show its prompts.",
                              description="Train an Aligner, correct answers with it, show its prompts.")
    sub = p.add_subparsers(dest="aligner_command", metavar="{train,correct,prompt}")
    sub.required = True

    t = sub.add_parser("train", help="Train an Aligner from a recipe (SFT through OpenRLHF).",
                       description="Train an Aligner: aligner.train.* and model.aligner.* of the recipe, plus "
                       "key=value overrides, on the cluster.trainer ranks of a Ray cluster (cluster.address, or a "
                       "private local one). Writes a Hugging Face model directory with w2s_aligner.json.")
    t.add_argument("recipe", help="Recipe file or name under recipes/ (e.g. tiny/aligner).")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="Config overrides, applied last.")
    t.add_argument("--output", help="Model directory to write. Default: RUN_DIR/aligner when run.dir is set, else "
                   "runs/aligner-RECIPE-TIME/aligner.")
    t.add_argument("--keep-warmup", action="store_true", help="Keep the identity warm-up model directory.")
    t.add_argument("--overwrite", action="store_true", help="Replace the Aligner that --output already holds (the "
                   "new one takes its place atomically once saved). A folder with anything else is never replaced.")
    t.set_defaults(func=cmd_train)
    _collect_overrides(t)

    c = sub.add_parser("correct", help="Correct a file of (question, answer) rows into a JSON Lines file.",
                       description="Correct every row of a JSON/JSONL/Parquet/CSV file with a trained Aligner. "
                       "Streams to --output and resumes it if it exists; writes OUTPUT.stats.json. key=value "
                       "overrides set correct.* (decoding, template, keys) and model.aligner.* (dtype, ...).")
    c.add_argument("--aligner", required=True, help="Trained Aligner directory (or asset:NAME).")
    c.add_argument("--input", required=True, help="Rows with question and answer fields.")
    c.add_argument("--output", required=True, help="JSON Lines output (resumed when it exists).")
    c.add_argument("--instruction", help="Preset (helpful-harmless, safer, empathy, concise, helpful) or free text.")
    c.add_argument("--template", help="auto (from the Aligner's metadata), aligner-v1, aligner-v2, chat, or a "
                   "name from aligner.templates.")
    c.add_argument("--allow-template-mismatch", action="store_true", help="Correct with --template even though the "
                   "Aligner's metadata names another (recorded in the rows, with a warning); refused otherwise.")
    c.add_argument("--recipe", help="Base recipe for the config (default: built-in defaults).")
    c.add_argument("--backend", choices=["transformers", "vllm"], help="Generation engine (correct.backend): "
                   "vllm on GPUs, or on CPU with vLLM's CPU build.")
    c.add_argument("--max-rows", type=non_negative, default=0, help="Correct at most this many rows (0: all).")
    c.add_argument("--seed", type=int, help="Base sampling seed (default: correct.seed, else run.seed).")
    c.add_argument("--no-progress", action="store_true", help="No progress bar.")
    c.add_argument("overrides", nargs="*", metavar="key=value", help="Config overrides, applied last.")
    c.set_defaults(func=cmd_correct)
    _collect_overrides(c)

    r = sub.add_parser("prompt", help="Print the exact prompt an Aligner sees for one (question, answer).",
                       description="Print the exact rendered prompt for one (question, answer) pair.")
    src = r.add_mutually_exclusive_group(required=True)
    src.add_argument("--aligner", help="Aligner directory: its metadata picks the template (and its tokenizer "
                     "renders chat templates).")
    src.add_argument("--template", help="Template name (aligner-v1, aligner-v2, chat, or from --recipe).")
    r.add_argument("--question", required=True)
    r.add_argument("--answer", required=True)
    r.add_argument("--instruction", default="", help="Preset name or free text.")
    r.add_argument("--tokenizer", help="Model whose tokenizer renders the chat template (with --template chat).")
    r.add_argument("--recipe", help="Recipe whose aligner.templates define user templates.")
    r.add_argument("--repr", action="store_true", help="Print the prompt as a Python string literal (shows "
                   "newlines and trailing spaces).")
    r.set_defaults(func=cmd_prompt)
    return p


def _collect_overrides(parser: argparse.ArgumentParser) -> None:
    """Accept ``key=value`` overrides anywhere, also after options (``--output DIR a.b=1``).

    argparse fills a ``nargs="*"`` positional only once, from the first run of positionals, and reports later
    ones as unrecognised; this moves those into ``overrides`` (options stay unrecognised, and are reported).
    """
    parse = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        ns, unknown = parse(args, namespace)
        extra = [u for u in unknown if not u.startswith("-")]
        ns.overrides = list(getattr(ns, "overrides", None) or []) + extra
        return ns, [u for u in unknown if u.startswith("-")]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


# ----------------------------------------------------------------------------------------------- config
def compose(recipe: str | None, overrides: list[str], job: str) -> DictConfig:
    """A checked config: the recipe (or the schema defaults when none) with ``key=value`` overrides."""
    from w2s.config.compose import load_config

    if recipe:
        return load_config(recipe, overrides, job=job)
    from omegaconf import OmegaConf

    from w2s.config.compose import check_against, parse_overrides
    from w2s.config.schema import W2SConfig
    from w2s.config.validate import validate
    from w2s.errors import ConfigError

    data, issues = parse_overrides(list(overrides))
    check_against(data, W2SConfig, "", issues)
    if issues:
        raise ConfigError(issues, "command line")
    cfg = OmegaConf.merge(OmegaConf.structured(W2SConfig), OmegaConf.create(data))
    issues = validate(cfg, job=job)
    if issues:
        raise ConfigError(issues, "command line")
    OmegaConf.set_readonly(cfg, True)
    return cfg


def _user_templates(cfg: DictConfig | None) -> dict[str, Any]:
    return dict(cfg.aligner.templates) if cfg is not None else {}


# ----------------------------------------------------------------------------------------------- commands
def cmd_train(args: argparse.Namespace) -> int:
    """``w2s aligner train RECIPE [key=value ...]``: the same trainer world as ``w2s run`` (``cluster.trainer``)."""
    from w2s.cluster import RayCluster
    from w2s.config.compose import load_config
    from w2s.roles import Services
    from w2s.workers.requests import TrainAligner

    cfg = load_config(args.recipe, args.overrides, job="aligner-train")
    if args.output:
        out = Path(args.output)
    elif cfg.run.dir:
        out = Path(cfg.run.dir) / "aligner"
    else:
        name = Path(args.recipe).stem if args.recipe.endswith((".yaml", ".yml")) else args.recipe.replace("/", "-")
        out = Path("runs") / f"aligner-{name}-{time.strftime('%Y%m%d-%H%M%S')}" / "aligner"
    out = out.resolve()  # the ranks are Ray actors: their working directory is not necessarily this one
    check_output_dir(out, overwrite=args.overwrite)
    role = cfg.cluster.trainer
    print(f"training the Aligner on {role.num_actors} trainer rank(s) (cluster.trainer)")
    with RayCluster(cfg.cluster, actor_logs=str(out.parent / "logs"), log_level=str(cfg.log.level)), \
            Services(cfg) as services:
        meta = services.trainer.train(TrainAligner(section=cfg, output=str(out), progress=bool(cfg.log.progress),
                                                   keep_warmup=args.keep_warmup))
    last = meta["stages"][-1]
    print(f"Aligner written to {out} ({meta['world_size']} rank(s), {last['steps']} steps, loss "
          f"{last['loss_first']} -> {last['loss_last']})")
    return 0


def check_output_dir(out: Path, *, overwrite: bool) -> None:
    """Training writes a whole model folder: never over a user's own files, over an earlier Aligner only when
    asked (checked before anything starts).

    Raises:
        W2SError: ``out`` is a file, a folder with files that are not a w2s Aligner, or an Aligner and not
            ``overwrite``; the message names the folder and the fix.
    """
    from w2s.aligner import METADATA_FILE
    from w2s.errors import W2SError

    if not out.exists():
        return
    if not out.is_dir():
        raise W2SError(f"--output {out} is a file; give a folder that is new or empty")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    if (out / METADATA_FILE).is_file():
        if overwrite:
            return
        raise W2SError(f"--output {out} holds an Aligner trained before; pass --overwrite to replace it, or give "
                       "another folder")
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise W2SError(f"--output {out} is not empty and is not a w2s Aligner (it holds {shown}); training writes a "
                   "whole model folder there: give a new or empty folder")


def non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; give 0 (all rows) or a row count")
    return value


def cmd_correct(args: argparse.Namespace) -> int:
    """``w2s aligner correct --aligner DIR --input FILE --output FILE [...]``."""
    from w2s.aligner.correct import cli_correction_seed, correct_file
    from w2s.data.partial import rows_per_call
    from w2s.roles.on_demand import ServicesOnDemand

    overrides = list(args.overrides) + [f"model.aligner.path={args.aligner}"]
    if args.template:
        overrides.append(f"correct.template={args.template}")
    if args.allow_template_mismatch:
        overrides.append("correct.allow_template_mismatch=true")
    if args.backend:
        overrides.append(f"correct.backend={args.backend}")
    cfg = compose(args.recipe, overrides, job="correct")
    if args.instruction is not None:  # free text may hold anything: keep it out of YAML parsing
        from omegaconf import OmegaConf

        cfg = OmegaConf.merge(cfg, {"correct": {"instruction": args.instruction}})
    seed = args.seed if args.seed is not None else cli_correction_seed(cfg)
    try:
        with contextlib.ExitStack() as stack:
            # The Aligner corrects in the role services' corrector actor, as in a round (its placement, engine and
            # log file, under the output's logs/), started once the input rows and the Aligner check out.
            # A retry (run.max_retries) goes on from the rows already written.
            services = ServicesOnDemand(stack, cfg, Path(args.output).resolve().parent / "logs")
            services.retrying("correction", lambda: correct_file(
                args.aligner, args.input, args.output, model_cfg=cfg.model.aligner, correct_cfg=cfg.correct,
                user_templates=_user_templates(cfg), seed=int(seed),
                progress=not args.no_progress and bool(cfg.log.progress), max_rows=args.max_rows,
                chunk=rows_per_call(cfg.correct, cfg.cluster.corrector),
                make_corrector=lambda: services.corrector(args.aligner)))
    except OSError as e:
        if Path(args.aligner).exists():
            raise
        from w2s.errors import W2SError

        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise W2SError(f"--aligner {args.aligner}: no such folder here, and it could not be loaded as a hub model "
                       f"({reason}); give the trained Aligner's folder") from None
    return 0


def cmd_prompt(args: argparse.Namespace) -> int:
    """``w2s aligner prompt --aligner DIR|--template NAME --question Q --answer A [--instruction ...]``."""
    from w2s.aligner.correct import resolve_template
    from w2s.aligner.templates import get_template, render

    cfg = compose(args.recipe, [], job="prompt") if args.recipe else None
    user_templates = _user_templates(cfg)
    tokenizer = None
    instruction = args.instruction
    if args.aligner:
        from w2s.assets import resolve_model_path

        path = resolve_model_path(args.aligner)
        template, trained, _ = resolve_template(path, "auto", user_templates)
        instruction = instruction or trained
        tok_path = args.tokenizer or path
    else:
        template = get_template(args.template, user_templates)
        tok_path = args.tokenizer
    if template.chat:
        from w2s.errors import W2SError

        if not tok_path:
            raise W2SError("the chat template needs a tokenizer: pass --tokenizer MODEL (or --aligner DIR)")
        from transformers import AutoTokenizer

        from w2s.assets import resolve_model_path

        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(tok_path))
    prompt = render(template, args.question, args.answer, instruction, tokenizer=tokenizer)
    sys.stdout.write((repr(prompt) if args.repr else prompt) + "\n")
    return 0
