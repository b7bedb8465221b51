"""``w2s bench train``: samples/s of OpenRLHF's SFT and DPO trainers on a recipe's trainer ranks, and of its peer,
OpenRLHF's own command line (``openrlhf.cli.train_sft`` and ``train_dpo``), run as its users run it, in a process of
its own, on the same rows with the same hyperparameters (``--peer``).

w2s trains through OpenRLHF's trainers, so the two differ only in what w2s adds around them: a long-lived Ray
actor, the data checks, the kept DPO reference, the atomic save and its refit probe. The flags are written from the
same :func:`w2s.backends.args.flat_args` the trainer actor uses, restricted to those the CLI declares. On a machine
without CUDA the process first applies :mod:`w2s.compat.cpu` (the CLI cannot run there otherwise, as w2s's trainer
cannot); OpenRLHF's code is not otherwise touched: its trainer's ``fit`` is timed from outside.

The CLI accepts ``--ds.param_dtype`` bf16 or fp16 only, so the peer is measured in bf16 or fp16. It is started
under ``torchrun`` with as many ranks as the recipe gives w2s's trainer (``cluster.trainer.num_actors``), one
process each, as OpenRLHF's users start it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from w2s.backends.args import PARAM_DTYPES
from w2s.errors import ConfigError, ConfigIssue, W2SError
from w2s.workers.requests import TrainDPO, Training, TrainSFT

CLI = {"sft": "openrlhf.cli.train_sft", "dpo": "openrlhf.cli.train_dpo"}
TRAINER = {"sft": ("openrlhf.trainer.sft_trainer", "SFTTrainer"), "dpo": ("openrlhf.trainer.dpo_trainer", "DPOTrainer")}

# The flat names both CLIs declare and w2s sets (the rest of flat_args is state w2s's in-process driver needs).
_COMMON = ("train.seed", "train.micro_batch_size", "train.batch_size", "train.max_epochs", "ds.zero_stage",
           "ds.param_dtype", "ds.adam_offload", "ds.attn_implementation", "ds.packing_samples", "ds.lora.rank",
           "ds.lora.alpha", "ds.lora.dropout", "ds.lora.target_modules", "model.gradient_checkpointing_enable",
           "data.max_len",
           "data.apply_chat_template", "optim", "adam.lr", "adam.betas", "adam.eps", "adam.weight_decay",
           "lr_scheduler", "lr_warmup_ratio", "min_lr_ratio", "max_norm", "ckpt.output_dir", "ckpt.disable_ds")
_OWN = {"sft": ("data.input_key", "data.output_key"),
        "dpo": ("data.prompt_key", "data.chosen_key", "data.rejected_key", "model.beta", "model.nll_loss_coef",
                "model.label_smoothing", "model.ipo_enable")}


WORLD_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


class PeerError(W2SError):
    """OpenRLHF's CLI process failed."""


class Trained(NamedTuple):
    """One training as a benchmark measured it."""

    seconds_total: float  # the call or the process, start-up, loading and saving included
    seconds_fit: float  # the trainer's fit loop alone
    steps: int
    samples: int
    peak_mem_mb: float


def check(param_dtypes: dict[str, str]) -> None:
    """Refuse, all at once and before anything trains, a dtype the CLI does not accept. ``param_dtypes``: each
    method's."""
    issues = []
    for method, dtype in param_dtypes.items():
        if PARAM_DTYPES.get(dtype) not in ("bf16", "fp16"):
            issues.append(ConfigIssue(f"train.{method}.param_dtype", dtype, "OpenRLHF's CLI trains in bf16 or fp16 "
                                      "only (--ds.param_dtype)", "pass --dtype bfloat16"))
    if issues:
        raise ConfigError(issues)


def cli_argv(flat: dict[str, Any], kind: str, *, model: str, data: str, ref: str | None = None) -> list[str]:
    """The CLI flags of ``kind`` that train as ``flat`` (:func:`w2s.backends.args.flat_args`) does."""
    argv = ["--model.model_name_or_path", model, "--data.dataset", data, "--ckpt.save_steps", "-1"]
    if kind == "dpo":
        argv += ["--ref.model_name_or_path", ref or model]
    for key in (*_COMMON, *_OWN[kind]):
        value = flat[key]
        if isinstance(value, bool):
            argv += [f"--{key}"] if value else []
        elif isinstance(value, (list, tuple)):
            argv += [f"--{key}", *map(str, value)]
        elif value is not None:
            argv += [f"--{key}", str(value)]
    return argv


def run_peer(kind: str, flat: dict[str, Any], *, model: str, data: str, ref: str | None, out: Path, ranks: int,
             threads: int, timeout_s: float = 3600) -> dict[str, Any]:
    """Train once with OpenRLHF's CLI under ``torchrun``: ``ranks`` processes with ``threads`` torch threads each (as
    Ray gives the trainer actors); its wall time (start-up and imports included), rank 0's ``fit`` time and steps,
    and the ranks' peak memory together. The output goes to ``out/peer-KIND.log`` (``peer-KIND-packed.log``)."""
    name = f"peer-{kind}-packed" if flat["ds.packing_samples"] else f"peer-{kind}"
    argv = cli_argv({**flat, "ckpt.output_dir": str(out / name)}, kind, model=model, data=data, ref=ref)
    timings = out / f"{name}.json"
    for old in out.glob(f"{timings.stem}.rank*.json"):
        old.unlink()
    # A world of its own (torchrun's standalone rendezvous on a free port): a torch.distributed world this process
    # inherited (a Slurm job's, or a test process's that still listens on its MASTER_PORT) would have the CLI
    # rendezvous on a port that is taken.
    env = {k: v for k, v in os.environ.items() if k not in WORLD_ENV}
    env.update(OMP_NUM_THREADS=str(threads), W2S_PEER_THREADS=str(threads))
    # (torchrun's own files beside the output: by default it leaves a torchelastic_* folder in the temp dir)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}",
                f"--log-dir={out / f'{name}-torchrun'}"]
    with open(out / f"{name}.log", "w") as log:
        t0 = time.perf_counter()
        done = subprocess.run([*launcher, "-m", __name__, kind, str(timings), *argv], stdout=log,
                              stderr=subprocess.STDOUT, env=env, timeout=timeout_s)
        seconds = time.perf_counter() - t0
    per_rank = [_rank_file(timings, r) for r in range(ranks)]
    if done.returncode != 0 or not all(f.exists() for f in per_rank):
        raise PeerError(f"{CLI[kind]} exited {done.returncode}; its output: {out / f'{name}.log'}")
    records = [json.loads(f.read_text()) for f in per_rank]
    return {"seconds_total": seconds, **records[0], "peak_mem_mb": sum(r["peak_mem_mb"] for r in records)}


def _rank_file(timings: Path, rank: int) -> Path:
    return timings.with_name(f"{timings.stem}.rank{rank}.json")


def train_as_w2s(cfg: Any, method: str, section: Any, request: Any, out: Path) -> Trained:
    """``request`` (a :class:`~w2s.workers.requests.TrainSFT` or ``TrainDPO``) through OpenRLHF's CLI, with the flags
    w2s's trainer ranks would use, as many ranks, and as many torch threads each as Ray gives a rank."""
    from w2s.backends.args import batch_sizes, flat_args
    from w2s.backends.models import training_attn

    ranks = int(cfg.cluster.trainer.num_actors)
    micro, global_batch = batch_sizes(section, ranks)
    flat = flat_args(section, seed=request.seed, micro=micro, global_batch=global_batch, chat=request.chat, kind=method,
                     tensorboard_dir=None, output_dir=str(out / "peer"),
                     attn=training_attn(str(cfg.model.strong.attn_implementation)))
    peer = run_peer(method, flat, model=request.policy, data=request.data,
                    ref=request.reference if method == "dpo" else None, out=out, ranks=ranks,
                    threads=max(1, int(cfg.cluster.trainer.num_cpus_per_actor)))
    steps = int(peer["steps"])
    return Trained(peer["seconds_total"], peer["fit_seconds"], steps, steps * int(peer["global_batch"]),
                   peer["peak_mem_mb"])


def bench_train(args: argparse.Namespace) -> list[dict[str, Any]]:
    """OpenRLHF's trainer for each method of ``--method`` (SFT, DPO) on the recipe's trainer ranks
    (``cluster.trainer``), on ``--rows`` synthetic rows: the wall time of the call (the ranks' start-up included),
    the trainer's ``fit`` time and samples/s, and the ranks' peak memory together. With ``--peer``, each method
    also through OpenRLHF's own command line on the same rows and flags (:func:`train_as_w2s`)."""
    from omegaconf import OmegaConf

    from w2s.assets import resolve_model_path
    from w2s.backends import data as data_files
    from w2s.backends.models import training_attn
    from w2s.bench.services import PROMPTS, bench_services
    from w2s.roles import Services

    rows = []
    with contextlib.ExitStack() as stack:
        cfg, out = bench_services(args, stack, [f"model.strong.path={args.model}"])
        model = resolve_model_path(args.model)
        ranks = int(cfg.cluster.trainer.num_actors)
        # 1 to 8 sentences: lengths vary within a micro-batch, as real rows' do
        answers = [f"Here is answer number {i}." + " It has a few more words to make it realistic." * (i % 8) for i in
                   range(args.rows)]
        sections = {(method, packing): OmegaConf.merge(cfg.train[method], {
            "micro_batch_samples_per_device": args.micro_batch,
            "global_batch_samples": args.micro_batch * ranks * 2,  # two micro-batches a step on each rank
            "packing_samples": packing == "on"},
            {"param_dtype": args.dtype} if args.dtype else {}) for method in args.method for packing in args.packing}
        if args.peer:
            check({m: str(s.param_dtype) for (m, _), s in sections.items()})
        # OpenRLHF's CLI packs with flash-attention only (it switches to it): without, its rows are the padded ones.
        peer_packs = training_attn("flash_attention_2") == "flash_attention_2"
        for (method, packing), section in sections.items():
            data = out / f"{method}.jsonl"  # beside the actor logs: on a cluster, a folder every node reads
            if method == "sft":
                data_files.write_sft_rows(data, [(PROMPTS[i % 8], a) for i, a in enumerate(answers)], chat=True)
                request: Training = TrainSFT(section=section, policy=model, data=str(data),
                                             output=str(out / "policy"))
            else:
                data_files.write_pair_rows(data, [(PROMPTS[i % 8], a, "No.") for i, a in enumerate(answers)])
                request = TrainDPO(section=section, policy=model, reference=model,  # the reference: the same model
                                   data=str(data), output=str(out / "policy"))
            measured: dict[str, list[Trained]] = {"w2s": [], "openrlhf-cli": []}
            for _ in range(args.repeat):  # w2s and the peer in turn: each repeat under the same conditions
                with Services(cfg) as services:  # closed after each training: the next one's memory is its own
                    t0 = time.perf_counter()
                    result = services.trainer.train(request)
                    secs = time.perf_counter() - t0
                    peak = services.peak_memory_mb("trainer")
                measured["w2s"].append(Trained(secs, result["fit_seconds"], result["steps"], result["samples"], peak))
                if args.peer and (packing == "off" or peer_packs):
                    measured["openrlhf-cli"].append(train_as_w2s(cfg, method, section, request, out))
            rows += [{"runner": runner, "method": method, "packing": packing, "model": args.model,
                      "dtype": str(section.param_dtype), "ranks": ranks, **_median_training(runs)}
                     for runner, runs in measured.items() if runs]
    return rows


def _median_training(runs: list[Trained]) -> dict[str, Any]:
    """One row from each repeat of a training: the medians, the fit loop's range over the repeats, samples/s at the
    median fit time, and the highest peak."""
    from statistics import median

    fits = [r.seconds_fit for r in runs]
    return {"samples": runs[0].samples, "steps": runs[0].steps, "repeats": len(runs),
            "seconds_total": round(median(r.seconds_total for r in runs), 2), "seconds_fit": round(median(fits), 2),
            "seconds_fit_range": f"{min(fits):.2f}-{max(fits):.2f}" if len(runs) > 1 else "-",
            "samples_per_s": round(runs[0].samples / max(median(fits), 1e-9), 2),
            "peak_mem_mb": round(max(r.peak_mem_mb for r in runs))}


def _time_fit(kind: str, record: dict[str, Any]) -> None:
    """Wrap the trainer class's ``fit`` to record its wall time and its optimizer steps."""
    import importlib

    module, name = TRAINER[kind]
    cls = getattr(importlib.import_module(module), name)
    fit = cls.fit

    def timed(self: Any, args: Any, consumed_samples: int = 0, num_update_steps_per_epoch: int | None = None) -> Any:
        t0 = time.perf_counter()
        try:
            return fit(self, args, consumed_samples, num_update_steps_per_epoch)
        finally:
            record["fit_seconds"] = time.perf_counter() - t0
            per_epoch = len(self.train_dataloader) // self.strategy.accumulated_gradient
            record["steps"] = per_epoch * self.epochs
            record["global_batch"] = args.train.batch_size

    cls.fit = timed


def main(argv: list[str]) -> None:
    """``python -m w2s.bench.train KIND TIMINGS_JSON CLI_FLAGS...``, one rank of a torchrun world: OpenRLHF's CLI of
    KIND, as ``python -m`` runs it, with its fit timed into TIMINGS.rankN.json (N: this rank)."""
    import runpy

    import torch

    from w2s.backends.openrlhf import ensure_dist_env
    from w2s.compat import cpu
    from w2s.data.files import atomic_write_text
    from w2s.memory import tree_peak_mb

    kind, timings, flags = argv[0], Path(argv[1]), argv[2:]
    torch.set_num_threads(int(os.environ.get("W2S_PEER_THREADS", torch.get_num_threads())))
    cpu.apply()  # nothing with CUDA
    rank, _ = ensure_dist_env()  # torchrun's world (on CPU with LOCAL_RANK -1, as w2s's trainer ranks have it)
    record: dict[str, Any] = {}
    _time_fit(kind, record)
    sys.argv = [CLI[kind], *flags]
    runpy.run_module(CLI[kind], run_name="__main__", alter_sys=True)
    record["peak_mem_mb"] = tree_peak_mb()
    atomic_write_text(_rank_file(timings, rank), json.dumps(record))


if __name__ == "__main__":
    main(sys.argv[1:])
