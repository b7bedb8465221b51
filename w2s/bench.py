"""``w2s bench``: throughput numbers for the two hot paths, printed as a table.

* ``w2s bench generate``: engine start-up, tokens/s, prompts/s and peak memory of the generation backends side by
  side (``--backend transformers,vllm``), the transformers backend at several batch sizes.
* ``w2s bench train``: samples/s of OpenRLHF's SFT or DPO trainer through w2s's backend (in this process).
* ``w2s bench aligner``: trains a recipe's Aligner, then its effect: omega with a 95% CI (embedding judge), copy
  rate and share of corrections cut off at max_new_tokens, on the held-out questions of its triples and on the
  recipe's evaluation prompts answered by its strong model (a second set, never used to choose the training).
* ``w2s bench loop``: runs a recipe (or reads a finished run, ``--run-dir``) and prints, per stage and per round,
  wall seconds against the part spent in work (generation, correction, optimizer steps, judging, as the role
  services timed it): the rest is start-up and orchestration. Also how many actor processes each role started.

Each prints peak resident memory too (generation: of the whole process tree, vLLM's engine process
included). Run them on an otherwise idle machine; numbers from a loaded machine mean little.
They are benchmarks, not tests: nothing asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPTS = ["What is the capital of France?", "How can I sleep better?", "Explain photosynthesis briefly.",
           "Give me three tips for a job interview.", "Why is the sky blue?", "How do I apologise to a friend?",
           "What is 17 times 23?", "Write a haiku about rain."]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TreeMemory:
    """Peak resident memory of this process and its children (vLLM runs its engine in a child process), sampled
    every 0.2 s in a thread."""

    def __init__(self) -> None:
        import threading

        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> float:
        import psutil

        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:  # exited between listing and reading
                pass
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak_mb = max(self.peak_mb, self._sample())

    def __enter__(self) -> TreeMemory:
        self.peak_mb = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def bench_generate_one(args: argparse.Namespace, backend: str) -> list[dict[str, Any]]:
    """One backend in this process: engine start-up once, then each batch size on the same prompts.

    vLLM schedules its own batches, so it is measured once with every prompt submitted together (``batch``
    says ``all``); the transformers backend is measured at each ``--batch`` size.
    """
    from omegaconf import OmegaConf

    from w2s.config.schema import ModelConfig, SamplingConfig
    from w2s.generation import make_generator, render_chat

    rows = []
    model_cfg = OmegaConf.structured(ModelConfig(path=args.model, dtype=args.dtype))
    batches: list[int | str] = list(args.batch) if backend == "transformers" else ["all"]
    with TreeMemory() as mem:
        t0 = time.perf_counter()
        sampling = OmegaConf.structured(SamplingConfig(backend=backend, max_new_tokens=args.max_new_tokens,
                                                       temperature=0.0))
        gen = make_generator(args.model, model_cfg, sampling)
        startup = time.perf_counter() - t0
        prompts = [render_chat(gen.tokenizer, PROMPTS[i % len(PROMPTS)]) for i in range(args.prompts)]
        for batch in batches:
            size = len(prompts) if batch == "all" else int(batch)
            sampling.batch_prompts_per_actor = size
            gen.generate(prompts[:size], sampling, seed=0)  # warm-up: first-call allocations, compiled kernels
            t1 = time.perf_counter()
            outs = gen.generate(prompts, sampling, seed=0)
            secs = time.perf_counter() - t1
            tokens = sum(o.completion_tokens for o in outs)
            rows.append({"backend": backend, "batch": batch, "prompts": len(prompts), "new_tokens": tokens,
                         "startup_s": round(startup, 1), "seconds": round(secs, 2),
                         "tokens_per_s": round(tokens / secs, 1), "prompts_per_s": round(len(prompts) / secs, 2)})
        gen.close()
    for r in rows:
        r["peak_mem_mb"] = round(mem.peak_mb)
    return rows


def bench_generate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every backend of ``--backend`` on the same prompts; each in its own process when there are several, so
    that start-up and peak memory are each backend's own."""
    if len(args.backend) == 1:
        return bench_generate_one(args, args.backend[0])
    import subprocess
    import sys

    rows = []
    for backend in args.backend:
        argv = [sys.executable, "-m", "w2s.cli", "bench", "generate", "--json", "--backend", backend,
                "--model", args.model, "--dtype", args.dtype, "--prompts", str(args.prompts),
                "--batch", ",".join(map(str, args.batch)), "--max-new-tokens", str(args.max_new_tokens)]
        out = subprocess.run(argv, check=True, stdout=subprocess.PIPE, text=True).stdout
        # The table is the last line (libraries may print before it).
        rows += json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("[")))
    return rows


def bench_train(args: argparse.Namespace) -> list[dict[str, Any]]:
    from omegaconf import OmegaConf

    from w2s.assets import resolve_model_path
    from w2s.backends import data as data_files
    from w2s.backends import openrlhf
    from w2s.config.schema import DPOConfig, SFTConfig

    model = resolve_model_path(args.model)
    cfg_cls = SFTConfig if args.method == "sft" else DPOConfig
    cfg = OmegaConf.structured(cfg_cls(max_len=256, micro_batch_samples_per_device=args.micro_batch,
                                       global_batch_samples=args.micro_batch * 2, zero_stage=0))
    with tempfile.TemporaryDirectory(prefix="w2s-bench-") as tmp:
        data = Path(tmp) / "data.jsonl"
        answers = [f"Here is a short answer number {i}, with a few more words to make it realistic." for i in
                   range(args.rows)]
        if args.method == "sft":
            data_files.write_sft_rows(data, [(PROMPTS[i % 8], a) for i, a in enumerate(answers)], chat=True)
            t0 = time.perf_counter()
            result = openrlhf.train_sft(cfg, model, str(data), str(Path(tmp) / "out"))
        else:
            data_files.write_pair_rows(data, [(PROMPTS[i % 8], a, "No.") for i, a in enumerate(answers)])
            t0 = time.perf_counter()
            result = openrlhf.train_dpo(cfg, model, model, str(data), str(Path(tmp) / "out"))
        secs = time.perf_counter() - t0
    return [{"method": args.method, "model": args.model, "samples": result.samples, "steps": result.steps,
             "seconds_total": round(secs, 2), "seconds_training": round(result.seconds, 2),
             "samples_per_s": round(result.samples / max(result.seconds, 1e-9), 2),
             "peak_rss_mb": round(peak_rss_mb())}]


def bench_aligner(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train the Aligner of ``args.recipe`` and measure what it does to answers it has never seen."""
    import subprocess
    import sys

    from w2s.aligner.cli import compose
    from w2s.aligner.correct import PROVENANCE_KEY
    from w2s.console import say
    from w2s.data.files import read_jsonl
    from w2s.data.prompts import Prompt, read_prompts
    from w2s.eval.cli import aligner_corrections, answers_of, evaluate_and_report
    from w2s.roles import ServicesOnDemand

    cfg = compose(args.recipe, list(args.overrides), job="loop")
    out = Path(args.output or tempfile.mkdtemp(prefix="w2s-bench-aligner-"))
    aligner = Path(args.aligner) if args.aligner else out / "aligner"
    t0 = time.perf_counter()
    if not args.aligner:  # --aligner: measure decoding changes on an Aligner trained before
        train = subprocess.run([sys.executable, "-m", "w2s.cli", "aligner", "train", args.recipe, "--output",
                                str(aligner), *args.overrides], capture_output=True, text=True)
        if train.returncode != 0:
            raise RuntimeError(f"aligner training failed:\n{train.stdout[-2000:]}{train.stderr[-2000:]}")
    train_s = time.perf_counter() - t0
    heldout = read_jsonl(aligner.with_name(aligner.name + ".work") / "eval.jsonl")
    sets = {"held-out triples": ([Prompt(str(t["id"]), t["question"], t["correction"]) for t in heldout],
                                 {str(t["id"]): t["answer"] for t in heldout})}
    prompts = read_prompts(cfg.eval.prompts, with_reference=True, what="eval.prompts", echo=say)
    prompts = prompts[: int(cfg.eval.max_prompts) or None]
    ns = argparse.Namespace(answer_key="answer", api_key_env="")
    sets["eval prompts"] = (prompts, None)  # answered by the strong model
    rows = []
    with contextlib.ExitStack() as stack:
        services = ServicesOnDemand(stack, cfg, out / "logs")  # generator, corrector and judges as in a round
        for name, (items, answers) in sets.items():
            folder = out / name.replace(" ", "-")
            folder.mkdir(parents=True, exist_ok=True)
            t1 = time.perf_counter()
            if answers is None:
                answers = answers_of("upstream", cfg.model.strong.path, items, cfg, ns, folder, services)
            (folder / "corrections.jsonl").unlink(missing_ok=True)  # a new Aligner at the same path: correct again
            corrections = aligner_corrections(str(aligner), items, answers, cfg, folder, services)
            evaluate_and_report(cfg, items, corrections, answers, ("Aligner corrections", "original answers"), folder,
                                services)
            summary = json.loads((folder / "summary.json").read_text())["judges"]["similarity"]
            reasons = [r[PROVENANCE_KEY]["finish_reason"] for r in read_jsonl(folder / "corrections.jsonl")]
            rows.append({"set": name, "n": summary["n"], "omega": round(summary["omega"], 1),
                         "ci95": f"[{summary['ci_low']:+.1f}, {summary['ci_high']:+.1f}]",
                         "W/L/T": f"{summary['wins']}/{summary['losses']}/{summary['ties']}",
                         "p": round(summary["p_value"], 4),
                         "copy_rate": round(sum(corrections[i].strip() == answers[i].strip() for i in answers)
                                            / len(answers), 3),
                         "cut_off_rate": round(reasons.count("length") / len(reasons), 3),
                         "train_s": round(train_s), "eval_s": round(time.perf_counter() - t1)})
    say(f"benchmark outputs (answers, corrections, reports): {out}")
    return rows


def loop_times(run_dir: Path) -> list[dict[str, Any]]:
    """Per stage of a run (its manifests), then per round and for the whole run: wall seconds, work seconds and
    the rest (start-up and orchestration)."""
    from w2s.rundir import read_state

    manifests = sorted(run_dir.glob("*/manifest.json")) + sorted(run_dir.glob("round-*/*/manifest.json"))
    rows: list[dict[str, Any]] = []
    totals: dict[str, list[float]] = {}
    for path in manifests:
        m = read_state(path)
        wall, work = float(m.get("seconds", 0.0)), float(m.get("work_seconds", 0.0))
        where = str(path.parent.relative_to(run_dir))
        rows.append(_time_row(where, wall, work))
        group = where.split("/")[0] if where.startswith("round-") else "before the rounds"
        for key in (group, "whole run"):
            t = totals.setdefault(key, [0.0, 0.0])
            t[0], t[1] = t[0] + wall, t[1] + work
    return rows + [_time_row(f"{key} (total)", *t) for key, t in totals.items()]


def _time_row(where: str, wall: float, work: float) -> dict[str, Any]:
    other = max(wall - work, 0.0)
    return {"stage": where, "wall_s": round(wall, 1), "work_s": round(work, 1), "startup_and_orchestration_s":
            round(other, 1), "startup_share": f"{100 * other / wall:.0f}%" if wall else "-"}


def bench_loop(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run ``args.recipe`` (unless ``--run-dir`` names a finished run) and say where its time went."""
    import subprocess
    import sys
    from collections import Counter

    run_dir = Path(args.run_dir or args.output or tempfile.mkdtemp(prefix="w2s-bench-loop-"))
    if not args.run_dir:
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "w2s.cli", "run", args.recipe, f"run.dir={run_dir}",
                              *args.overrides])
        if run.returncode != 0:
            raise RuntimeError(f"w2s run {args.recipe} failed (exit {run.returncode}); its run dir: {run_dir}")
        print(f"w2s run {args.recipe}: {time.perf_counter() - t0:.0f} s in all, run dir {run_dir}")
    cluster = run_dir / "cluster.json"
    if cluster.exists():
        started = Counter(a["role"] for a in json.loads(cluster.read_text())["actors"])
        print("actor processes started: " + ", ".join(f"{role} {n}" for role, n in sorted(started.items())))
    return loop_times(run_dir)


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows))
        return
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)))


def cmd_bench(args: argparse.Namespace) -> int:
    rows = {"generate": bench_generate, "train": bench_train, "aligner": bench_aligner,
            "loop": bench_loop}[args.what](args)
    _print(rows, args.json)
    return 0


def _backends(text: str) -> list[str]:
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in ("transformers", "vllm")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown backend(s) {bad or text!r}: choose from transformers, vllm")
    return names


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure generation tokens/s, training samples/s, an Aligner's effect, "
                              "or where a run's time goes",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["generate", "train", "aligner", "loop"])
    p.add_argument("overrides", nargs="*", metavar="key=value", help="aligner, loop: config overrides of the recipe")
    p.add_argument("--recipe", default="quickstart", help="aligner: the recipe whose Aligner is trained; loop: the "
                   "recipe that runs")
    p.add_argument("--output", help="aligner: folder for the Aligner and the evaluations; loop: the run dir "
                   "(default: a new temp dir)")
    p.add_argument("--run-dir", help="loop: read this finished run instead of running the recipe")
    p.add_argument("--aligner", help="aligner: measure this trained Aligner instead of training one (its held-out "
                   "triples are read from ALIGNER.work/eval.jsonl)")
    p.add_argument("--model", default="asset:smollm2", help="model path or asset (default asset:smollm2)")
    p.add_argument("--backend", default=["transformers"], type=_backends,
                   help="generate: comma-separated backends measured side by side (transformers,vllm)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--prompts", type=int, default=32, help="generate: prompts per measurement")
    p.add_argument("--batch", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 16],
                   help="generate: comma-separated batch sizes")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--method", choices=["sft", "dpo"], default="sft", help="train only")
    p.add_argument("--rows", type=int, default=64, help="train: rows of synthetic data")
    p.add_argument("--micro-batch", type=int, default=4, help="train: samples per micro-batch")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_bench)
    from w2s.aligner.cli import _collect_overrides

    _collect_overrides(p)
