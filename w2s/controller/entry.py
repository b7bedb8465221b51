"""``w2s run``: open the run directory, start or join Ray, run the recipe's job, write the report.

SIGTERM and SIGUSR2 (Slurm's pre-emption warning) stop the driver (:func:`w2s.cluster.stop_signals`, which the
CLI holds for every command): at the next safe point while it waits on its actors (every remote wait checks each
second); nothing unfinished is marked done, and the process exits with status 143 so that a requeued job resumes
the same run directory.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from w2s.cluster import RayCluster
from w2s.console import say
from w2s.controller.jobs import JOBS
from w2s.errors import ActorRaised, WorkerError
from w2s.rundir import RunDir, refuse_fewer_rounds
from w2s.stopping import EXIT_STOPPED, STOP, StopRequested

LOW_SPACE_BYTES = 1 << 30


def full_disk_hint(run_dir: Path, error: str) -> str:
    """A line for a failed stage when the run directory's disk is the likely cause (an actor's write failed: its
    message rarely names a path): how much is free there and the fix; empty otherwise."""
    import shutil

    try:
        free = shutil.disk_usage(run_dir).free
    except OSError:
        return ""
    said = any(s in error for s in ("No space left on device", "ENOSPC", "Errno 28", "Disk quota exceeded",
                                    "file write failed"))
    if not said and free >= LOW_SPACE_BYTES:
        return ""
    return (f"the run directory {run_dir} is on a filesystem with {free / 2**20:.0f} MiB free: free some space "
            "there (or move run.dir) and re-run the same command to resume")


def default_run_dir(recipe: str) -> Path:
    name = Path(recipe).stem
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def quiet_libraries() -> None:
    """Keep library noise off the driver's console: deprecation warnings and per-call progress bars (model
    loading, dataset mapping). The actors' own noise goes to RUN_DIR/logs; log.level=DEBUG keeps all of it."""
    import os
    import sys
    import warnings

    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # transformers reads this one when it is imported (its progress bars follow the hub's), so the driver need not
    # import it (a second of start-up) only to quiet it.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # imported already: too late for the environment
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def run_job(cfg: DictConfig, *, recipe: str, overrides: list[str]) -> int:
    """Run a validated config's job in its run directory. Returns the process exit status."""
    level = str(cfg.log.level).upper()
    logging.basicConfig(level=getattr(logging, level), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if level != "DEBUG":
        quiet_libraries()
    from w2s import progress

    progress.ENABLED = bool(cfg.log.progress)
    run_dir = Path(cfg.run.dir) if cfg.run.dir else default_run_dir(recipe)
    if cfg.job == "loop":
        refuse_fewer_rounds(run_dir, int(cfg.loop.rounds))
    rd = RunDir(run_dir, cfg)
    resumed = rd.open(recipe=recipe, overrides=overrides)
    say(f"run dir: {rd.path}" + (" (resuming)" if resumed else ""))
    t0 = time.time()
    job = JOBS[cfg.job]
    inputs = job.preflight(cfg) if job.preflight else None
    try:
        with RayCluster(cfg.cluster, actor_logs=str(rd.path / "logs"), log_level=level) as cluster:
            info = cluster.describe()
            rd.record_cluster(info)
            nodes = [n for n in info["nodes"] if n["alive"]]
            say(f"ray: {len(nodes)} node(s) " + ", ".join(f"{n['hostname'] or n['ip']}" for n in nodes))
            from w2s.shared_dir import check_shared_run_dir

            check_shared_run_dir(rd.path, nodes)
            from w2s.roles import Services

            with Services(cfg, on_placed=rd.record_placements) as services:
                rd.attach(services)
                job.work(cfg, rd, services, inputs)
    except (WorkerError, ActorRaised) as e:
        hint = full_disk_hint(rd.path, str(e))
        if hint:
            raise type(e)(f"{e}\n{hint}") from e
        raise
    except StopRequested as e:
        say(f"stopped during {e} after {time.time() - t0:.0f} s; re-run the same command to resume")
        say(f"run dir: {rd.path}")
        return EXIT_STOPPED
    from w2s.report import write_report

    report = write_report(rd.path)
    say(f"finished in {time.time() - t0:.0f} s; report: {report.with_suffix('.html')} (and {report.name})")
    say(f"run dir: {rd.path}")
    return 0 if not STOP.is_set() else EXIT_STOPPED



def run_seeds(recipe: str, overrides: list[str], seeds: list[int]) -> int:
    """``w2s run RECIPE --seeds 1,2,3``: the recipe once per seed, one after the other, each in its own resumable
    run directory (``RUN_DIR/seed-N`` with ``run.seed=N``), then the report over them (:mod:`w2s.seeds`). Every
    seed's config is checked before the first run starts; a run that stops (or fails) stops the rest."""
    from w2s.config.compose import find_recipe, load_config
    from w2s.seeds import seed_dirs, write_seeds_report

    first = load_config(recipe, overrides)
    base = Path(first.run.dir) if first.run.dir else default_run_dir(recipe)
    dirs = seed_dirs(base, seeds)
    per_seed = [[*overrides, f"run.seed={s}", f"run.dir={d}"] for s, d in zip(seeds, dirs, strict=True)]
    configs = [load_config(recipe, o) for o in per_seed]
    for k, (cfg, o) in enumerate(zip(configs, per_seed, strict=True), start=1):
        say(f"===== seed {cfg.run.seed} ({k}/{len(seeds)}) =====")
        code = run_job(cfg, recipe=str(find_recipe(recipe)), overrides=o)
        if code:
            return code
    say(f"report over {len(seeds)} seeds: {write_seeds_report(dirs, base)}")
    return 0
