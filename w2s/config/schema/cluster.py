"""Where the roles run (Ray, resources per role), the run directory and logging."""

from __future__ import annotations

from dataclasses import dataclass

from w2s.config.schema.fields import _f


# ----------------------------------------------------------------------------------------------- cluster
@dataclass
class RoleConfig:
    num_actors: int = _f(1, "Actors playing this role (data parallel for generation; ranks for training).")
    num_cpus_per_actor: float = _f(1.0, "CPUs reserved per actor.")
    num_gpus_per_actor: float = _f(0.0, "GPUs per actor: 0 (CPU), 1, or k (a tensor-parallel vLLM engine). Roles "
                                   "share GPUs through cluster.colocate, not through fractions.")


@dataclass
class ClusterConfig:
    address: str = _f("", "Ray cluster to join: empty starts a private local instance; `auto` or HOST:PORT joins "
                      "an existing one (the Slurm case).")
    num_cpus: int = _f(0, "CPUs of the private local instance (0: all of this machine's); ignored when joining.",
                       minimum=0)
    num_gpus: int = _f(0, "GPUs of the private local instance (0: all visible); ignored when joining.", minimum=0)
    include_dashboard: bool = _f(False, "Start Ray's dashboard (bound to dashboard_host).")
    dashboard_host: str = _f("127.0.0.1", "Address the dashboard listens on (localhost unless you mean otherwise).")
    temp_dir: str = _f("", "Ray's temporary directory. Empty: Ray's default.")
    rpc_timeout_s: float = _f(0.0, "Optional cap on the total time of any one remote call (a whole generation, "
                              "correction or training run) and of a PPO run; 0: no cap, hangs are caught by "
                              "liveness_timeout_s instead. Set it only to bound a run that stays alive but makes no "
                              "progress (e.g. a collective that never returns).", minimum=0)
    liveness_timeout_s: float = _f(600.0, "The driver pings the actors it waits on (answered while a long call "
                                   "runs); one that answers no ping for this long is taken for hung and the run "
                                   "stops with its role, rank, node, pid and logs. A frozen process (stopped, "
                                   "swapping, native code holding the GIL) answers none; 10 min leaves room for "
                                   "the occasional long native call of 70B training. PPO, a child process, counts "
                                   "as hung when its log stays silent this long. 0: no liveness check.", minimum=0)
    start_timeout_s: float = _f(3600.0, "Longest a role's actors may take to start (their constructors load the "
                                "model: a 70B checkpoint from a network file system, a tensor-parallel vLLM engine "
                                "with CUDA graphs); no pings are answered meanwhile. 0: no limit.", minimum=0)
    gpus_per_node: int = _f(8, "GPUs per node of a GPU cluster; lays out OpenRLHF's PPO over nodes. Checked against "
                            "the Ray cluster joined when PPO starts (PPO refuses to start when they differ).")
    placement_strategy: str = _f("PACK", "How a role's bundles are spread over nodes (actors of more than one GPU "
                                 "always get one-GPU bundles on one node each, for tensor parallelism).",
                                 ["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"])
    generator: RoleConfig = _f(help="Strong-policy generation actors.", factory=RoleConfig)
    corrector: RoleConfig = _f(help="Aligner correction actors.", factory=RoleConfig)
    trainer: RoleConfig = _f(help="Trainer ranks; together they form one torch.distributed world.",
                             factory=RoleConfig)
    judge: RoleConfig = _f(help="Judge actors.", factory=RoleConfig)
    colocate: list[str] = _f(help="Roles that share GPUs, as OpenRLHF's hybrid engine does: one placement group of "
                             "whole-GPU bundles, rank i of every listed role on GPU i (k consecutive GPUs for an "
                             "actor of k), kept for the run; the roles take turns in GPU memory (vLLM engines "
                             "sleep, models move to host memory) and keep their processes. E.g. [generator, "
                             "corrector, trainer, judge] on one 8-GPU node. Empty: each role has GPUs of its own.",
                             factory=list)


# ----------------------------------------------------------------------------------------------- run and log
@dataclass
class RunConfig:
    dir: str = _f("", "Run directory. Empty: a new folder under runs/ named after the recipe and the time.")
    seed: int = _f(42, "Seed for data splits, sampling and training.")
    resume: str = _f("auto", "auto: continue the run in run.dir from its first unfinished stage; never: refuse a "
                     "non-empty run.dir; fork: allow config changes to finished stages by redoing them.",
                     ["auto", "never", "fork"])
    max_retries: int = _f(0, "Retries of a stage whose actor died or hung, before the run stops; in `w2s aligner "
                          "correct`, `w2s eval` and `w2s interpret`, of the command's work, which goes on from what it "
                          "wrote.", minimum=0)


@dataclass
class WandbConfig:
    project: str = _f("", "Log each stage's numbers to this Weights & Biases project (empty: off). The API key comes "
                      "from WANDB_API_KEY or `wandb login`, never from the config.")
    entity: str = _f("", "W&B entity (team or user). Empty: your default.")
    mode: str = _f("online", "online, or offline (written under RUN_DIR/wandb, `wandb sync` later).",
                   ["online", "offline"])


@dataclass
class LogConfig:
    level: str = _f("INFO", "Log level of the driver and the actors (either case). Below DEBUG, actors write to "
                    "RUN_DIR/logs/ROLE-RANK.log and the console shows w2s's own lines and one progress line per "
                    "stage; DEBUG relays everything, library warnings included.",
                    ["DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"])
    tensorboard: bool = _f(True, "Write TensorBoard logs under RUN_DIR/tensorboard.")
    wandb: WandbConfig = _f(help="Weights & Biases logging of the run's metrics.", factory=WandbConfig)
    progress: bool = _f(True, "Show progress bars for long work.")
