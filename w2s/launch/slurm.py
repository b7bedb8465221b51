"""``w2s launch slurm``: check a recipe against N nodes x G GPUs, render the sbatch script, submit it.

    w2s launch slurm recipes/gpu/dpo_70b.yaml --nodes 8 --gpus-per-node 8 --partition gpu --time 24:00:00 \\
        train.dpo.beta=0.1

The script is rendered from ``launch/slurm/w2s.sbatch`` into ``RUN_DIR/slurm/w2s.sbatch`` together with a
copy of ``ray_cluster.sh`` (so the exact scripts that ran are kept with the run), then handed to
``sbatch``. ``--dry-run`` renders and prints it without submitting. Resubmitting the kept script
(``sbatch RUN_DIR/slurm/w2s.sbatch``) resumes the run.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from w2s.errors import ConfigError, ConfigIssue, W2SError
from w2s.shipped import SLURM_TEMPLATE_DIR

TEMPLATE_DIR = SLURM_TEMPLATE_DIR
TEMPLATE = "w2s.sbatch"
HELPERS = "ray_cluster.sh"
_SLURM_TIME = re.compile(r"^(\d+-)?\d+(:\d+){0,2}$|^UNLIMITED$|^INFINITE$")


@dataclass
class LaunchSpec:
    """Everything the sbatch script is rendered from."""

    recipe: Path
    run_dir: Path
    nodes: int
    gpus_per_node: int = 0
    overrides: list[str] = field(default_factory=list)
    partition: str = ""
    time: str = ""
    account: str = ""
    cpus_per_node: int = 0          # 0: the whole node (--exclusive)
    mem: str = ""                   # e.g. 200G; empty: the partition's default
    job_name: str = ""
    signal_seconds: int = 120       # warning before the time limit (USR2 -> stop at a safe point, requeue)
    venv: Path = field(default_factory=lambda: Path(sys.prefix))
    workdir: Path = field(default_factory=Path.cwd)
    env: dict[str, str] = field(default_factory=dict)  # W2S_NET_IFACE, W2S_RAY_PORT_RANGE, ... (ray_cluster.sh)
    extra_sbatch: list[str] = field(default_factory=list)

    @property
    def slurm_dir(self) -> Path:
        return self.run_dir / "slurm"


def _dq(value: str) -> str:
    """``value`` escaped for a double-quoted shell string."""
    return re.sub(r'(["$`\\}])', r"\\\1", value)


def render(spec: LaunchSpec, template: str | None = None) -> str:
    """The sbatch script for ``spec`` (placeholders ``{{name}}`` of the template filled in).

    Raises:
        W2SError: the template has a placeholder this renderer does not know.
    """
    text = template if template is not None else (TEMPLATE_DIR / TEMPLATE).read_text()
    res = []
    if spec.gpus_per_node > 0:
        res.append(f"--gpus-per-node={spec.gpus_per_node}")
    res.append(f"--cpus-per-task={spec.cpus_per_node}" if spec.cpus_per_node > 0 else "--exclusive")
    for flag, value in (("partition", spec.partition), ("time", spec.time), ("account", spec.account),
                        ("mem", spec.mem)):
        if value:
            res.append(f"--{flag}={value}")
    res += spec.extra_sbatch
    command = [str(spec.recipe), f"run.dir={spec.run_dir}", *spec.overrides]
    values = {
        "job_name": spec.job_name or f"w2s-{spec.recipe.stem}",
        "nodes": str(spec.nodes),
        "gpus_per_node": str(spec.gpus_per_node),
        "resource_lines": "\n".join(f"#SBATCH {r}" for r in res),
        "slurm_dir": str(spec.slurm_dir),
        "run_dir": str(spec.run_dir),
        "venv": str(spec.venv),
        "workdir": str(spec.workdir),
        "signal_seconds": str(spec.signal_seconds),
        "env_lines": "\n".join(f'export {k}="${{{k}:-{_dq(v)}}}"' for k, v in sorted(spec.env.items())),
        "command_args": " ".join(shlex.quote(c) for c in command),
    }
    for key in ("job_name", "slurm_dir", "run_dir", "venv", "workdir"):
        # These land unquoted in #SBATCH lines or inside "${VAR:-...}" defaults.
        if any(c in values[key] for c in " \t\n\"'$`\\{}"):
            raise W2SError(f"launch setting {key}={values[key]!r} contains spaces, quotes, `$`, braces or "
                           "backslashes; choose a plain path or name")
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    left = re.findall(r"\{\{\w+\}\}", text)
    if left:
        raise W2SError(f"the sbatch template has unknown placeholders {sorted(set(left))}")
    return text


def write_scripts(spec: LaunchSpec) -> Path:
    """Render into ``RUN_DIR/slurm/`` (with a copy of the helpers it sources); returns the sbatch path."""
    spec.slurm_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TEMPLATE_DIR / HELPERS, spec.slurm_dir / HELPERS)
    script = spec.slurm_dir / TEMPLATE
    script.write_text(render(spec))
    script.chmod(0o755)
    return script


def submit(script: Path, env: dict[str, str] | None = None) -> str:
    """``sbatch`` the rendered script; returns the job id.

    Raises:
        W2SError: sbatch is missing or refused the job (its message included).
    """
    if not shutil.which("sbatch"):
        raise W2SError("sbatch not found: run this on a Slurm login node, or use --dry-run to only render")
    r = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    if r.returncode != 0:
        raise W2SError(f"sbatch refused {script}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout.strip().split(";")[0]


def _spec_issues(spec: LaunchSpec) -> list[ConfigIssue]:
    issues = []
    if spec.nodes < 1:
        issues.append(ConfigIssue("--nodes", spec.nodes, "must be at least 1", "ask for one node or more"))
    if spec.gpus_per_node < 0:
        issues.append(ConfigIssue("--gpus-per-node", spec.gpus_per_node, "cannot be negative", "use 0 for CPU nodes"))
    if spec.time and not _SLURM_TIME.match(spec.time):
        issues.append(ConfigIssue("--time", spec.time, "is not a Slurm time", "write e.g. 90, 4:00:00 or 2-00:00:00"))
    if not (spec.venv / "bin" / "activate").is_file():
        issues.append(ConfigIssue("--venv", str(spec.venv), "has no bin/activate",
                                  "run w2s from its virtual environment or pass --venv"))
    return issues


def prepare(args: argparse.Namespace) -> tuple[LaunchSpec, list[str]]:
    """Load and check the recipe for the requested resources; returns the spec and the resource notes.

    Raises:
        ConfigError: every config and resource problem, with the arithmetic.
    """
    from w2s.config.compose import find_recipe, load_config
    from w2s.launch.resources import Request, check_resources

    recipe = find_recipe(args.recipe)
    overrides = [o for o in args.overrides if not o.startswith("run.dir=")]
    run_dirs = [o.split("=", 1)[1] for o in args.overrides if o.startswith("run.dir=")]
    run_dir = args.run_dir or (run_dirs[-1] if run_dirs else "")
    # The job joins the Ray cluster its script starts, so checks of a private local instance do not apply.
    cfg = load_config(recipe, [*overrides, "cluster.address=auto"])
    if not run_dir:
        run_dir = cfg.run.dir or str(Path("runs") / f"{recipe.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    bad_env = [kv for kv in args.env or [] if "=" not in kv or not re.match(r"^[A-Za-z_]\w*=", kv)]
    if bad_env:
        raise ConfigError([ConfigIssue("--env", kv, "must be KEY=VALUE", "e.g. --env W2S_RAY_WAIT_S=600")
                           for kv in bad_env])
    env = dict(kv.split("=", 1) for kv in args.env or [])
    if args.net_iface:
        env["W2S_NET_IFACE"] = args.net_iface
    spec = LaunchSpec(recipe=recipe, run_dir=Path(run_dir).absolute(), nodes=args.nodes,
                      gpus_per_node=args.gpus_per_node, overrides=overrides, partition=args.partition or "",
                      time=args.time or "", account=args.account or "", cpus_per_node=args.cpus_per_node,
                      mem=args.mem or "", job_name=args.job_name or "", signal_seconds=args.signal_seconds,
                      venv=Path(args.venv).absolute() if args.venv else Path(sys.prefix), env=env,
                      extra_sbatch=list(args.sbatch_arg or []))
    issues = _spec_issues(spec)
    report = check_resources(cfg, Request(nodes=args.nodes, gpus_per_node=args.gpus_per_node,
                                          gpu_mem_gb=args.gpu_mem_gb, cpus_per_node=args.cpus_per_node))
    issues += report.issues
    if issues:
        raise ConfigError(issues, f"{recipe} on {args.nodes} node(s) x {args.gpus_per_node} GPU(s)")
    return spec, report.notes


def cmd_launch_slurm(args: argparse.Namespace) -> int:
    spec, notes = prepare(args)
    for note in notes:
        print(f"resources: {note}", file=sys.stderr)
    if args.dry_run:
        print(render(spec), end="")
        print(f"# dry run: not written or submitted; would go to {spec.slurm_dir / TEMPLATE}", file=sys.stderr)
        return 0
    script = write_scripts(spec)
    job = submit(script)
    print(f"submitted job {job}: {spec.nodes} node(s) x {spec.gpus_per_node} GPU(s)")
    print(f"run dir: {spec.run_dir}")
    print(f"script:  {script}")
    print(f"logs:    {spec.slurm_dir}/job-{job}.out, driver-{job}.log, ray-NODE-{job}.log, ray-ports-{job}.env")
    return 0


class _OverridesAnywhereParser(argparse.ArgumentParser):
    """Accepts ``key=value`` overrides before, between and after the options (argparse alone takes them
    only in one block), and after a ``--`` separator."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        ns, extras = super().parse_known_args(args, namespace)
        overrides = [e for e in extras if e != "--" and not e.startswith("-")]
        if overrides and hasattr(ns, "overrides"):
            ns.overrides = list(ns.overrides or []) + overrides
            extras = [e for e in extras if e.startswith("-") and e != "--"]
        return ns, extras


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``w2s launch slurm ...`` to the ``w2s`` command line."""
    launch = subparsers.add_parser("launch", help="launch a recipe on a cluster scheduler (Slurm)",
                                   description="Launch a recipe on a cluster scheduler.")
    kinds = launch.add_subparsers(dest="launcher", metavar="LAUNCHER", required=True,
                                  parser_class=_OverridesAnywhereParser)
    p = kinds.add_parser("slurm", help="run a recipe on a Ray cluster across the nodes of one Slurm job",
                         description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                         epilog="Settings of the Ray cluster (ports, temp dir, dashboard, wait timeout) are "
                                "environment variables, see launch/README.md; pass them with --env KEY=VALUE.")
    p.add_argument("recipe", help="recipe file, or a name under recipes/")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for `w2s run`")
    p.add_argument("--nodes", type=int, required=True, help="nodes of the job (one Ray node each)")
    p.add_argument("--gpus-per-node", type=int, required=True, help="GPUs per node (0 for CPU nodes)")
    p.add_argument("--gpu-mem-gb", type=float, default=80.0, help="memory of one GPU, for the checks (default 80)")
    p.add_argument("--cpus-per-node", type=int, default=0, help="CPUs per node to ask for (default: whole nodes)")
    p.add_argument("--mem", help="memory per node, e.g. 200G (default: the partition's)")
    p.add_argument("--partition", help="Slurm partition")
    p.add_argument("--time", help="time limit, e.g. 24:00:00")
    p.add_argument("--account", help="Slurm account")
    p.add_argument("--job-name", help="job name (default w2s-RECIPE)")
    p.add_argument("--run-dir", help="run directory (default run.dir, else runs/RECIPE-TIME)")
    p.add_argument("--signal-seconds", type=int, default=120,
                   help="seconds before the time limit at which w2s is told to stop and the job requeues")
    p.add_argument("--net-iface", help="network interface for Ray, NCCL and Gloo (e.g. ib0)")
    p.add_argument("--env", action="append", metavar="KEY=VALUE", help="environment for the job script (repeatable)")
    p.add_argument("--sbatch-arg", action="append", metavar="ARG",
                   help="extra #SBATCH option, e.g. --sbatch-arg=--qos=high (repeatable)")
    p.add_argument("--venv", help="virtual environment the job activates (default: the one running w2s)")
    p.add_argument("--dry-run", action="store_true", help="print the script instead of writing and submitting it")
    p.set_defaults(func=cmd_launch_slurm)
    return p
