"""``w2s bench``: throughput of the hot paths, the Aligner's effect and where a run's time goes, printed as a table.

* ``w2s bench generate``: engine start-up, tokens/s, prompts/s and peak memory of the generation backends side by
  side (``--backend transformers,vllm``), the transformers backend at several batch sizes, each in the generator
  actor a round of ``--recipe`` would start.
* ``w2s bench train``: samples/s of OpenRLHF's SFT or DPO trainer on the recipe's trainer ranks; ``--peer`` beside
  OpenRLHF's own command line on the same rows and flags, ``--repeat N`` medians and ranges over N trainings.
* ``w2s bench aligner``: trains a recipe's Aligner, then its effect: omega with a 95% CI (embedding judge), copy
  rate and share of corrections cut off at max_new_tokens, on the held-out questions of its triples and on the
  recipe's evaluation prompts answered by its strong model (also by the prompts' category). It is run to choose,
  so it refuses a set declared ``eval.role: test`` (by default it measures the quickstart's dev set, ``--recipe
  quickstart-dev``); ``--write`` puts its rows in a results file.
* ``w2s bench loop``: runs a recipe (or reads a finished run, ``--run-dir``) and prints, per stage and per round,
  wall seconds against the part spent in work (generation, correction, optimizer steps, judging, as the role
  services timed it): the rest is start-up and orchestration. Also how many actor processes each role started,
  and (when it runs the recipe) the machine's memory in use while it ran.

Each runs on the role services, as a round does (the recipe's placement, engines and actor logs, in the
output folder's logs/), and prints the peak resident memory of the actors that did the work, their engines'
processes included. Run them on an otherwise idle machine; numbers from a loaded machine mean little.
They are benchmarks, not tests: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from w2s.seeds import parse_seeds


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    _table([{k: v for k, v in r.items() if k != "by_category"} for r in rows])
    by_category = [{"set": r["set"], "category": cat, **c} for r in rows for cat, c in r.get("by_category", {}).items()]
    if by_category:
        print()
        _table(by_category)


def _table(rows: list[dict[str, Any]]) -> None:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(("-" if r[k] is None else str(r[k])).ljust(w) for k, w in zip(keys, widths)))


def cmd_bench(args: argparse.Namespace) -> int:
    if args.recipe is None:  # the Aligner benchmark chooses, so by default on the quickstart's dev set
        args.recipe = "quickstart-dev" if args.what == "aligner" else "quickstart"
    from w2s.bench.aligner import bench_aligner
    from w2s.bench.generate import bench_generate
    from w2s.bench.loop import bench_loop
    from w2s.bench.train import bench_train

    rows = {"generate": bench_generate, "train": bench_train, "aligner": bench_aligner,
            "loop": bench_loop}[args.what](args)
    _print(rows, args.json)
    if args.write and args.what in THROUGHPUT:  # (aligner and loop write files of their own shape)
        from w2s.data.files import atomic_write_text
        from w2s.results import throughput_results_markdown

        atomic_write_text(Path(args.write), throughput_results_markdown(args.what, _command(args), rows,
                                                                        THROUGHPUT[args.what]))
        print(f"results: {args.write}")
    return 0


# What the throughput benchmarks' results files say their rows are.
THROUGHPUT = {
    "generate": "Each backend in the generator actor a round starts, one after the other on the same prompts, greedy. "
                "startup_s: the actor and its engine, once per backend; seconds, tokens/s and prompts/s: the timed "
                "pass after a warm-up pass; peak_mem_mb: the actor's resident peak, its engine's processes included. "
                "vLLM schedules its own batches (batch `all`).",
    "train": "OpenRLHF's trainer on the recipe's trainer ranks (runner `w2s`), on synthetic rows of 1 to 8 sentences "
             "(lengths vary, as real rows' do: what a padded micro-batch wastes and a packed one does not), one "
             "method after the other, padded or packed (`packing`: packing_samples); with --peer, each also through "
             "OpenRLHF's own command line on the same rows and flags, under torchrun with as many ranks, one process "
             "each with as many torch threads (runner `openrlhf-cli`; packed only where flash-attention runs, which "
             "the CLI switches to for packing). seconds_total: the call, start-up, model loading and saving included "
             "(for the CLI, torchrun's and its processes' start-up and imports; for w2s, the trainer actors' start); "
             "seconds_fit and samples_per_s: the trainer's fit loop alone (rank 0's); peak_mem_mb: the resident "
             "peaks of the ranks together. With --repeat N, each training N times in fresh processes, w2s and its "
             "peer in turn: the seconds are medians, seconds_fit_range the fit loop's lowest and highest, "
             "peak_mem_mb the highest.",
}


def _command(args: argparse.Namespace) -> str:
    """The command line that measured ``args``'s rows, as a results file quotes it."""
    flags = ["--recipe", args.recipe, "--model", args.model, *(["--dtype", args.dtype] if args.dtype else [])]
    if args.what == "generate":
        flags += ["--backend", ",".join(args.backend), "--prompts", str(args.prompts),
                  "--batch", ",".join(map(str, args.batch)), "--max-new-tokens", str(args.max_new_tokens)]
    else:
        flags += ["--method", ",".join(args.method), "--rows", str(args.rows), "--micro-batch", str(args.micro_batch),
                  "--packing", ",".join(args.packing), *(["--repeat", str(args.repeat)] if args.repeat > 1 else []),
                  *(["--peer"] if args.peer else [])]
    return shlex.join(["w2s", "bench", args.what, *flags, "--write", args.write, *args.overrides])


def _at_least_one(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of at least 1")
    return int(text)


def _listed(allowed: tuple[str, ...], what: str) -> Any:
    """An argparse type: comma-separated names, each one of ``allowed``."""

    def parse(text: str) -> list[str]:
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in allowed]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {what}(s) {bad or text!r}: choose from {', '.join(allowed)}")
        return names

    return parse


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure generation tokens/s, training samples/s, an Aligner's effect, "
                              "or where a run's time goes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["generate", "train", "aligner", "loop"])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides of the recipe")
    p.add_argument("--recipe", help="aligner: the recipe whose Aligner is trained and measured on its dev set "
                   "(default quickstart-dev); loop: the recipe that runs; generate, train: the recipe whose cluster, "
                   "engine and training settings apply (default quickstart)")
    p.add_argument("--output", help="aligner: folder for the Aligner and the evaluations; loop: the run dir; "
                   "generate, train: folder for the actor logs and the training's data and model (default: a new "
                   "temp dir)")
    p.add_argument("--run-dir", help="loop: read this finished run instead of running the recipe")
    p.add_argument("--write", help="also write the measured results to this Markdown file (what a README quotes: "
                   "tests/test_results.py checks the quotes against it)")
    p.add_argument("--seeds", type=parse_seeds, help="aligner: train and measure one Aligner per seed (run.seed=N, "
                   "in OUTPUT/seed-N), then the mean omega of each set with a CI over seeds and prompts (1,2,3)")
    p.add_argument("--aligner", help="aligner: measure this trained Aligner instead of training one (its held-out "
                   "triples are read from ALIGNER.work/eval.jsonl)")
    p.add_argument("--model", default="asset:smollm2", help="model path or asset (default asset:smollm2)")
    p.add_argument("--backend", default=["transformers"], type=_listed(("transformers", "vllm"), "backend"),
                   help="generate: comma-separated backends measured side by side (transformers,vllm)")
    p.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                   help="generate: the model's dtype (default bfloat16); train: the trainer's param_dtype (default: "
                   "the recipe's training section's)")
    p.add_argument("--prompts", type=int, default=32, help="generate: prompts per measurement")
    p.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 16],
                   help="generate: comma-separated batch sizes")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--method", type=_listed(("sft", "dpo"), "method"), default=["sft"],
                   help="train: comma-separated methods measured one after the other (sft,dpo)")
    p.add_argument("--rows", type=int, default=64, help="train: rows of synthetic data")
    p.add_argument("--micro-batch", type=int, default=4, help="train: samples per micro-batch")
    p.add_argument("--packing", type=_listed(("off", "on"), "packing"), default=["off"],
                   help="train: each method padded (off) and/or with its micro-batches packed (on: packing_samples), "
                   "side by side (off,on)")
    p.add_argument("--repeat", type=_at_least_one, default=1, help="train: train each method (and its peer) this "
                   "many times, each in a fresh process, in turn; the rows give medians and the fit loop's range")
    p.add_argument("--peer", action="store_true", help="train: also run each method through OpenRLHF's own CLI "
                   "(openrlhf.cli.train_sft/train_dpo) on the same rows and flags, side by side (under torchrun, as "
                   "many ranks as the recipe's trainer; bf16 or fp16, the CLI's dtypes)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)
    from w2s.aligner.cli import _collect_overrides

    _collect_overrides(p)
