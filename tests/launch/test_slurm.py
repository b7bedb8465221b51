"""`w2s launch slurm`: rendering, refusal, dry run, the Ray-cluster script's choices (CPUs, GPUs, ports,
addresses); and (marker `slurm`) real jobs on a local two-node Slurm and on a one-node Slurm whose NodeAddr
is 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from w2s.cli import main as w2s_main
from w2s.launch import ray_wait
from w2s.launch.ray_net import PortPlanError, choose_ports, ray_node_ip, used_ports
from w2s.launch.ray_wait import missing_nodes
from w2s.launch.slurm import TEMPLATE_DIR, LaunchSpec, render, write_scripts

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import LocalSlurmCluster, SlurmUnavailable, ensure_slurm_installed  # noqa: E402

W2S = str(Path(sys.executable).with_name("w2s"))
HELPERS = TEMPLATE_DIR / "ray_cluster.sh"
PROBE = Path(__file__).with_name("slurm_ray_probe.py")


# ----------------------------------------------------------------------------------------------- rendering
def _spec(tmp_path: Path, **kw) -> LaunchSpec:
    base = dict(recipe=Path("recipes/tiny/slurm.yaml").absolute(), run_dir=tmp_path / "run", nodes=4,
                gpus_per_node=8, overrides=["train.dpo.beta=0.2", "loop.rounds=3"], partition="gpu",
                time="24:00:00", account="proj", signal_seconds=300, env={"W2S_NET_IFACE": "ib0"})
    base.update(kw)
    return LaunchSpec(**base)


def test_render_fills_nodes_gpus_signal_overrides_and_paths(tmp_path):
    spec = _spec(tmp_path)
    text = render(spec)
    assert "{{" not in text
    for line in ("#SBATCH --nodes=4", "#SBATCH --gpus-per-node=8", "#SBATCH --exclusive", "#SBATCH --partition=gpu",
                 "#SBATCH --time=24:00:00", "#SBATCH --account=proj", "#SBATCH --signal=B:USR2@300",
                 "#SBATCH --requeue", f"#SBATCH --output={spec.run_dir}/slurm/job-%j.out",
                 f"export W2S_VENV={sys.prefix}", f"export W2S_CLUSTER_SH={spec.run_dir}/slurm/ray_cluster.sh",
                 "export W2S_GPUS_PER_NODE=8", 'export W2S_NET_IFACE="${W2S_NET_IFACE:-ib0}"'):
        assert line in text.splitlines(), line
    cmd = next(line for line in text.splitlines() if "exec w2s run" in line)
    assert cmd.split() == ["exec", "w2s", "run", str(spec.recipe), f"run.dir={spec.run_dir}", "train.dpo.beta=0.2",
                           "loop.rounds=3", 'cluster.address="$W2S_RAY_ADDRESS"']
    # Every #SBATCH line comes before the first command, or Slurm ignores it.
    lines = text.splitlines()
    first_cmd = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(i < first_cmd for i, line in enumerate(lines) if line.startswith("#SBATCH"))


def test_render_cpu_nodes_and_quoting(tmp_path):
    text = render(_spec(tmp_path, gpus_per_node=0, cpus_per_node=16, partition="", account="",
                        overrides=["eval.judges.rm.model=my judge's dir"]))
    assert "--gpus-per-node" not in text and "#SBATCH --cpus-per-task=16" in text and "--exclusive" not in text
    assert "--partition" not in text and "--account" not in text
    assert """'eval.judges.rm.model=my judge'"'"'s dir'""" in text


def test_rendered_scripts_are_valid_bash_and_kept_with_the_run(tmp_path):
    script = write_scripts(_spec(tmp_path))
    assert script == tmp_path / "run" / "slurm" / "w2s.sbatch" and os.access(script, os.X_OK)
    helpers = script.with_name("ray_cluster.sh")
    assert helpers.read_text() == (TEMPLATE_DIR / "ray_cluster.sh").read_text()
    for f in (script, helpers):
        r = subprocess.run(["bash", "-n", str(f)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_helpers_define_the_functions_the_script_calls():
    r = subprocess.run(["bash", "-c", f"source {TEMPLATE_DIR / 'ray_cluster.sh'} && declare -F"],
                       capture_output=True, text=True, check=True)
    defined = set(re.findall(r"declare -f (\w+)", r.stdout))
    assert {"w2s_main", "w2s_discover_nodes", "w2s_start_ray", "w2s_stop_ray", "w2s_run_driver",
            "w2s_ray_node", "w2s_on_warning"} <= defined


def test_missing_nodes_names_the_absent_ones():
    expected = {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.2"}
    assert missing_nodes(expected, ["10.0.0.1", "10.0.0.2"]) == ["n3"]
    assert missing_nodes(expected, ["10.0.0.2", "10.0.0.1", "10.0.0.2"]) == []


def test_wait_timeout_names_the_addresses_ray_registered(monkeypatch):
    monkeypatch.setattr(ray_wait, "alive_node_ips", lambda address: ["192.0.2.2"])
    with pytest.raises(TimeoutError, match=r"missing after 0s: n1 \(127\.0\.0\.1\); live Ray nodes: 192\.0\.2\.2"):
        ray_wait.wait_for_nodes("10.0.0.1:20000", {"n1": "127.0.0.1"}, timeout_s=0, poll_s=0)


# ----------------------------------------------------------------------------------------------- the script
# ray_cluster.sh's functions run here with `srun` (and, where needed, `ray`) replaced by shell stand-ins: srun
# runs its command locally, except the port listing, which reports $FAKE_USED.
_FAKE_SRUN = r"""
srun() { echo "srun $*" >>"$W2S_SLURM_DIR/srun.log"; while [ $# -gt 0 ] && [[ $1 == -* ]]; do shift; done
         if [[ $* == *used-ports* ]]; then echo "${FAKE_USED:-}"; else "$@"; fi; }
"""


def _bash_run(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -u -o pipefail; source {HELPERS}; {_FAKE_SRUN}\n{script}"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                               **(env or {})})


def _bash(script: str, env: dict[str, str] | None = None) -> str:
    r = _bash_run(script, env)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _plan_ports(env_file: Path) -> set[int]:
    """Every port a rendered ray-ports-JOBID.env assigns (worker ranges expanded)."""
    ports: set[int] = set()
    for line in env_file.read_text().splitlines():
        if line.startswith("W2S_RAY_NODE_PORTS_"):
            *named, lo, hi = (int(x) for x in line.split("=", 1)[1].split("#")[0].strip().strip("'").split())
            ports |= set(named) | set(range(lo, hi + 1))
        elif line.startswith("W2S_RAY_") and "=" in line:
            ports.add(int(line.split("=", 1)[1]))
    return ports


def _choose(tmp_path: Path, job: int, used: str = "", **env: str) -> tuple[str, Path]:
    out = _bash('W2S_NODES=(n1 n2) W2S_NODE_IPS=(10.0.0.1 10.0.0.2) W2S_HEAD_IP=10.0.0.1; w2s_choose_ports; '
                'echo "$W2S_RAY_ADDRESS"',
                {"W2S_SLURM_DIR": str(tmp_path), "SLURM_JOB_ID": str(job), "FAKE_USED": used, **env})
    return out.strip(), tmp_path / f"ray-ports-{job}.env"


def test_two_jobs_get_disjoint_ports_recorded_in_the_log_dir(tmp_path):
    addr7, plan7 = _choose(tmp_path, 7)
    addr8, plan8 = _choose(tmp_path, 8)
    p7, p8 = _plan_ports(plan7), _plan_ports(plan8)
    assert addr7 == "10.0.0.1:23584" and addr8 == "10.0.0.1:24096"  # slot = job id mod 24 of 20000-32767
    assert len(p7) == len(p8) == 512 and not p7 & p8
    assert 10001 not in p7 | p8 and 52365 not in p7 | p8  # Ray's fixed defaults are never used
    # Job 31 maps to job 7's slot; while job 7 holds one of those ports on a node, 31 moves half a window on,
    # away from the slots of the next job ids (8, 9, ...), which may be starting at the same moment.
    addr31, plan31 = _choose(tmp_path, 31, used="23600 24000")
    assert addr31 == "10.0.0.1:30240" and not _plan_ports(plan31) & (p7 | p8)
    # An explicit W2S_RAY_PORT places the block (even outside the window: its ports are checked too); a busy
    # one is refused with the ports named.
    addr, _ = _choose(tmp_path, 9, W2S_RAY_PORT="40000")
    assert addr == "10.0.0.1:40000"
    scans = [x for x in (tmp_path / "srun.log").read_text().splitlines() if "used-ports" in x]
    assert scans[0].endswith("used-ports 20000 32767") and scans[-1].endswith("used-ports 20000 40511")
    r = _bash_run("W2S_NODES=(n1); W2S_NODE_IPS=(10.0.0.1); W2S_HEAD_IP=10.0.0.1; w2s_choose_ports",
                  {"W2S_SLURM_DIR": str(tmp_path), "SLURM_JOB_ID": "9", "W2S_RAY_PORT": "30000", "FAKE_USED": "30001"})
    assert r.returncode == 1 and "ports 30001 of the block at W2S_RAY_PORT=30000 are in use" in r.stderr


def test_nodes_sharing_an_address_get_their_own_ports():
    plan = choose_ports(3, [("n1", "127.0.0.1"), ("n2", "127.0.0.1"), ("n3", "10.0.0.3")])
    n1, n2, n3 = plan.nodes
    assert not n1.ports() & n2.ports()  # two Ray nodes on one host
    assert n3.node_manager == n1.node_manager  # a node alone on its address reuses the first set
    # The block's worker ports are split evenly between them (an odd one out stays unused).
    assert n1.max_worker + 1 == n2.min_worker and n2.max_worker <= plan.end
    assert n1.max_worker - n1.min_worker == n2.max_worker - n2.min_worker == (plan.end - n1.min_worker + 1) // 2 - 1
    with pytest.raises(PortPlanError, match="in use"):
        choose_ports(3, [("n1", "10.0.0.1")], used={plan.gcs + 100}, start=plan.gcs)
    with pytest.raises(PortPlanError, match="need at least 32"):
        choose_ports(3, [("n1", "10.0.0.1")], worker_range=(30000, 30010))


def test_used_ports_sees_live_sockets_not_time_wait():
    import socket

    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client.bind(("127.0.0.1", 0))
        client_port = client.getsockname()[1]
        client.connect(("127.0.0.1", port))
        conn, _ = server.accept()
        assert {port, client_port} <= used_ports(min(port, client_port), max(port, client_port))
        client.close()  # the side that closes first keeps its port in TIME_WAIT, which Ray's binds ignore
        time.sleep(0.2)
        conn.close()
        time.sleep(0.2)
        assert client_port not in used_ports(client_port, client_port)
        assert port in used_ports(port, port)


def test_cpus_per_node_come_from_the_job():
    out = _bash('W2S_NODES=(a b c); w2s_node_cpus; echo "${W2S_NODE_CPUS[*]}"',
                {"SLURM_JOB_CPUS_PER_NODE": "4(x2),2", "W2S_SLURM_DIR": "/tmp"})
    assert out.split() == ["4", "4", "2"]
    out = _bash('W2S_NODES=(a b); w2s_node_cpus; echo "${W2S_NODE_CPUS[*]}"',
                {"SLURM_JOB_CPUS_PER_NODE": "8(x2)", "SLURM_CPUS_PER_TASK": "3", "W2S_SLURM_DIR": "/tmp"})
    assert out.split() == ["3", "3"]


def test_ray_nodes_start_with_their_cpus_gpus_ports_and_address(tmp_path):
    """The srun line asks for the node's CPUs and GPUs again, and `ray start` gets what Slurm gave the task."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ray").write_text('#!/bin/bash\necho "RAY $*"\n')  # stands in for `ray start`
    (bin_dir / "ray").chmod(0o755)
    env = {"W2S_SLURM_DIR": str(tmp_path), "SLURM_JOB_ID": "5", "W2S_GPUS_PER_NODE": "4",
           "W2S_CLUSTER_SH": str(HELPERS), "W2S_RAY_TMPDIR": str(tmp_path / "rt"),
           "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    _bash('W2S_NODES=(n1 n2) W2S_NODE_IPS=(10.0.0.1 10.0.0.2) W2S_NODE_CPUS=(16 8) W2S_HEAD_IP=10.0.0.1; '
          'w2s_choose_ports; W2S_RAY_PIDS=(); w2s_start_ray_node head 0; w2s_start_ray_node worker 1; wait', env)
    srun = (tmp_path / "srun.log").read_text().splitlines()
    head = next(x for x in srun if "w2s_ray_node head" in x)
    worker = next(x for x in srun if "w2s_ray_node worker" in x)
    assert "--nodelist=n1 --cpus-per-task=16 --gpus-per-task=4" in head
    assert "--nodelist=n2 --cpus-per-task=8 --gpus-per-task=4" in worker
    # Inside the task: the CPUs and GPUs Slurm gave it (srun sets SLURM_CPUS_PER_TASK, CUDA_VISIBLE_DEVICES).
    gcs = 20000 + 5 * 512
    out = _bash(f'source {tmp_path}/ray-ports-5.env; w2s_ray_node head 10.0.0.1 $W2S_RAY_NODE_PORTS_0',
                {**env, "SLURM_CPUS_PER_TASK": "16", "CUDA_VISIBLE_DEVICES": "0,1,2,3",
                 "W2S_RAY_ADDRESS": f"10.0.0.1:{gcs}"})
    args = next(x for x in out.splitlines() if x.startswith("RAY ")).split()[2:]
    expected = ["--head", "--node-ip-address=10.0.0.1", "--num-cpus=16", "--num-gpus=4", "--dashboard-host=127.0.0.1",
                "--include-dashboard=false", f"--port={gcs}", f"--ray-client-server-port={gcs + 1}",
                f"--dashboard-port={gcs + 2}", f"--node-manager-port={gcs + 3}", f"--object-manager-port={gcs + 4}",
                f"--dashboard-agent-listen-port={gcs + 5}", f"--dashboard-agent-grpc-port={gcs + 6}",
                f"--runtime-env-agent-port={gcs + 7}", f"--metrics-export-port={gcs + 8}",
                f"--min-worker-port={gcs + 9}", f"--max-worker-port={gcs + 511}"]
    assert sorted(a for a in args if a not in ("--block", "--disable-usage-stats")) == sorted(expected)
    # No GPUs asked for: none claimed, whatever CUDA_VISIBLE_DEVICES says.
    out = _bash(f'source {tmp_path}/ray-ports-5.env; w2s_ray_node worker 10.0.0.2 $W2S_RAY_NODE_PORTS_1',
                {**env, "W2S_GPUS_PER_NODE": "0", "SLURM_CPUS_PER_TASK": "8", "CUDA_VISIBLE_DEVICES": "0",
                 "W2S_RAY_ADDRESS": f"10.0.0.1:{gcs}"})
    args = next(x for x in out.splitlines() if x.startswith("RAY ")).split()
    assert "--num-gpus=0" in args and "--num-cpus=8" in args and f"--address=10.0.0.1:{gcs}" in args
    assert not any(a.startswith(("--port=", "--ray-client-server-port", "--dashboard-host")) for a in args)


# ----------------------------------------------------------------------------------------------- the CLI
def test_cli_dry_run_prints_the_script_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "r"
    rc = w2s_main(["launch", "slurm", "tiny/slurm", "--nodes", "2", "--gpus-per-node", "0", "--dry-run",
                   "--run-dir", str(run_dir), "--time", "30", "loop.rounds=2", "--partition", "debug"])
    out = capsys.readouterr()
    assert rc == 0
    assert "#SBATCH --nodes=2" in out.out and "#SBATCH --partition=debug" in out.out
    assert f"run.dir={run_dir} loop.rounds=2" in out.out
    assert "dry run" in out.err and not run_dir.exists()


def test_cli_refuses_70b_dpo_on_too_few_gpus_with_exit_2(tmp_path, capsys):
    rc = w2s_main(["launch", "slurm", "tiny/slurm", "--nodes", "1", "--gpus-per-node", "8", "--dry-run",
                   "--run-dir", str(tmp_path / "r"), "train.method=dpo", "model.strong.params_b=70",
                   "train.dpo.zero_stage=3", "cluster.trainer.num_actors=8", "cluster.trainer.num_gpus_per_actor=1",
                   "train.dpo.global_batch_samples=16"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "157.5 GB per GPU" in err and "usable 64.0 GB" in err and "use >= 32 trainer GPUs" in err
    assert not (tmp_path / "r").exists()


def test_cli_reports_config_and_launch_errors_together(tmp_path, capsys):
    rc = w2s_main(["launch", "slurm", "tiny/slurm", "--nodes", "0", "--gpus-per-node", "0", "--time", "soon",
                   "--dry-run", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "--nodes" in err and "--time = 'soon'" in err
    rc = w2s_main(["launch", "slurm", "tiny/slurm", "--nodes", "1", "--gpus-per-node", "0", "--dry-run",
                   "train.methd=sft"])
    assert rc == 2 and "did you mean train.method" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- real Slurm
def _unavailable(reason: str) -> None:
    """Skip, or fail under `make test` (scripts/test.sh all sets W2S_REQUIRE_SLURM=1): there a Slurm cluster that
    cannot start is a failure, not a quiet skip."""
    if os.environ.get("W2S_REQUIRE_SLURM") == "1":
        pytest.fail(f"{reason} (W2S_REQUIRE_SLURM=1: make test needs a local Slurm cluster)")
    pytest.skip(reason)


def _local_slurm(tmp_path_factory, name: str, **kw):
    """Start a LocalSlurmCluster (skipping without root or Slurm, failing instead under `make test`), yield it, stop
    it by PID."""
    if os.geteuid() != 0:
        _unavailable("a local Slurm cluster needs root (munged, slurmd, network namespaces)")
    try:
        install_s = ensure_slurm_installed()
    except SlurmUnavailable as e:
        _unavailable(f"Slurm unavailable: {e}")
    cluster = LocalSlurmCluster(tmp_path_factory.mktemp(name), **kw)
    try:
        cluster.start()
    except SlurmUnavailable as e:
        cluster.stop()
        _unavailable(f"local Slurm did not start: {e}")
    except BaseException:
        cluster.stop()
        raise
    cluster.timings["install_s"] = install_s
    print(f"\nslurm {name}: mode {cluster.effective_mode} {cluster.fallback_reason} nodes {cluster.node_addrs} "
          f"install {install_s:.1f}s start {cluster.timings['daemon_start_s']:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()


# Both clusters pin every task to the CPUs Slurm gave it (task/affinity), with 2 CPUs per node: real CPU ids,
# as many as a 2-core CI runner has.
@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """munged + slurmctld + slurmd n1, n2 (netns mode where possible), stopped by PID at the end."""
    yield from _local_slurm(tmp_path_factory, "slurm", nodes=2, cpus_per_node=2, task_plugin="task/affinity")


@pytest.fixture(scope="module")
def slurm_loopback(tmp_path_factory):
    """One node whose NodeAddr is 127.0.0.1, as on a workstation running Slurm."""
    yield from _local_slurm(tmp_path_factory, "slurm-lo", nodes=1, cpus_per_node=2, mode="shared",
                            task_plugin="task/affinity")


@pytest.fixture
def ray_tmp():
    """A short Ray temp dir (Unix socket paths must stay under 107 bytes)."""
    path = tempfile.mkdtemp(prefix="w2sr")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# SLURM_EXACT=1: job steps get exactly the CPUs they ask for, as on sites that set it (and Slurm 20.11's
# default); a Ray node's srun that did not ask for its CPUs would be pinned to one core.
EXACT_STEPS = "SLURM_EXACT=1"


def _launch(slurm: LocalSlurmCluster, run_dir: Path, ray_tmp: str, *overrides: str) -> str:
    r = subprocess.run([W2S, "launch", "slurm", "tiny/slurm", "--nodes", "2", "--gpus-per-node", "0", "--time", "15",
                        "--run-dir", str(run_dir), "--env", EXACT_STEPS,
                        "--env", f"W2S_RAY_TMPDIR={ray_tmp}", "--env", "W2S_RAY_WAIT_S=120", *overrides],
                       env=slurm.env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return re.search(r"submitted job (\d+)", r.stdout).group(1)


def _job_logs(run_dir: Path) -> str:
    parts = []
    for f in sorted((run_dir / "slurm").glob("*.out")) + sorted((run_dir / "slurm").glob("*.log")):
        parts.append(f"==== {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-40:]))
    return "\n".join(parts)


def _our_ray_processes(ray_tmp: str) -> list[str]:
    r = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True)
    return [line for line in r.stdout.splitlines() if ray_tmp in line]


def _wait_for_a_finished_stage(slurm: LocalSlurmCluster, job: str, run_dir: Path) -> dict[Path, bytes]:
    """Poll until the running job has finished a stage; the finished manifests and their bytes."""
    deadline = time.monotonic() + 300
    first: list[Path] = []
    while time.monotonic() < deadline and not first:
        first = sorted(run_dir.glob("round-*/*/manifest.json")) + sorted(run_dir.glob("aligner/manifest.json"))
        assert slurm.job_info(job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), _job_logs(run_dir)
        time.sleep(0.5)
    assert first, "no stage finished within 300 s\n" + _job_logs(run_dir)
    return {p: p.read_bytes() for p in first}


def _check_two_node_run(slurm: LocalSlurmCluster, run_dir: Path) -> None:
    info = json.loads((run_dir / "cluster.json").read_text())
    alive_ips = sorted(n["ip"] for n in info["nodes"] if n["alive"])
    # Without network namespaces every node is 127.0.0.1, which Ray registers as the host's address.
    node_ips = [ray_node_ip(a) for a in slurm.node_addrs.values()]
    assert alive_ips == sorted(node_ips), info["nodes"]
    # Whole nodes (--exclusive): every Ray node reports the node's 2 CPUs.
    assert [n["resources"].get("CPU") for n in info["nodes"] if n["alive"]] == [2.0, 2.0], info["nodes"]
    trainer_ips = {a["node_ip"] for a in info["actors"] if a["role"] == "trainer"}
    assert trainer_ips == set(node_ips), info["actors"]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert metrics


def _check_job_files(run_dir: Path, job: str) -> None:
    """A job's scripts and logs are kept with the run; each Ray node's srun asked for its node's CPUs and got both
    cores; every port a node was given comes from the job's recorded plan."""
    for name in ("w2s.sbatch", "ray_cluster.sh", f"job-{job}.out", f"driver-{job}.log", f"ray-n1-{job}.log",
                 f"ray-n2-{job}.log"):
        assert (run_dir / "slurm" / name).is_file(), name
    job_out = (run_dir / "slurm" / f"job-{job}.out").read_text()
    assert "Ray cluster of 2 nodes up" in job_out
    for node in ("n1", "n2"):
        assert f"srun --overlap --nodes=1 --ntasks=1 --nodelist={node} --cpus-per-task=2 " in job_out, job_out
        assert "2 CPU(s) (allowed: 0-1)" in (run_dir / "slurm" / f"ray-{node}-{job}.log").read_text()
    # The head's ports include the client server's.
    plan = _plan_ports(run_dir / "slurm" / f"ray-ports-{job}.env")
    for node, least in (("n1", 11), ("n2", 8)):
        given = re.findall(r"-port=(\d+)", (run_dir / "slurm" / f"ray-{node}-{job}.log").read_text())
        assert len(given) >= least and {int(p) for p in given} <= plan, (node, given)


@pytest.mark.slurm
def test_preempted_job_is_requeued_and_resumes_the_run(slurm, tmp_path, ray_tmp, tiny_weak, tiny_strong):
    run_dir = tmp_path / "run"
    job = _launch(slurm, run_dir, ray_tmp)
    # Wait until the first stage is done, then deliver Slurm's pre-emption warning (what --signal=B:USR2 sends).
    done_before = _wait_for_a_finished_stage(slurm, job, run_dir)
    slurm.cancel(job, "--batch", "--signal=USR2")
    # The script forwards the signal, w2s stops at a safe point, the script requeues the job; it runs again.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and int(slurm.job_info(job).get("Restarts", 0)) < 1:
        time.sleep(0.5)
    assert int(slurm.job_info(job).get("Restarts", 0)) >= 1, _job_logs(run_dir)
    info = slurm.wait_job(job, timeout_s=400)
    logs = _job_logs(run_dir)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", logs
    assert "requeueing job" in logs
    for p, content in done_before.items():  # finished stages were not redone
        assert p.read_bytes() == content, p
    attempts = json.loads((run_dir / "run.json").read_text())["attempts"]
    assert len(attempts) == 2
    _check_two_node_run(slurm, run_dir)
    assert _our_ray_processes(ray_tmp) == []


@pytest.mark.slurm
def test_killed_job_resubmitted_resumes_the_run(slurm, tmp_path, ray_tmp, tiny_weak, tiny_strong):
    """A hard kill (scancel, no warning) mid-run, then the kept script submitted again: the run resumes, in a
    two-node job of its own whose scripts, logs, CPUs and ports are checked (every Slurm test runs a whole job,
    so this one also stands for a job that runs w2s on Ray across both nodes)."""
    run_dir = tmp_path / "run"
    job = _launch(slurm, run_dir, ray_tmp)
    done_before = _wait_for_a_finished_stage(slurm, job, run_dir)
    slurm.cancel(job)
    assert slurm.wait_job(job, timeout_s=120)["JobState"] == "CANCELLED"
    deadline = time.monotonic() + 60
    while _our_ray_processes(ray_tmp) and time.monotonic() < deadline:  # Slurm ends the job's steps
        time.sleep(0.5)
    again = slurm.sbatch([str(run_dir / "slurm" / "w2s.sbatch")])
    info = slurm.wait_job(again, timeout_s=400)
    logs = _job_logs(run_dir)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", logs
    full = "".join(f.read_text(errors="replace") for f in (run_dir / "slurm").rglob("*") if f.is_file())
    assert "finished earlier, skipped" in full, logs
    for p, content in done_before.items():
        assert p.read_bytes() == content, p
    assert len(json.loads((run_dir / "run.json").read_text())["attempts"]) == 2
    _check_two_node_run(slurm, run_dir)
    _check_job_files(run_dir, again)
    assert _our_ray_processes(ray_tmp) == []  # torn down by PID, nothing left behind


@pytest.mark.slurm
@pytest.mark.slow
def test_two_jobs_share_a_loopback_node(slurm_loopback, tmp_path):
    """A workstation whose NodeAddr is 127.0.0.1, two one-CPU jobs on its two CPUs at the same time: each Ray
    cluster comes up at the address Ray registers for the host, with its own ports, and reports its one CPU."""
    import ray.util

    host_ip = ray.util.get_node_ip_address()  # where Ray puts a node told 127.0.0.1 (Ray's own answer)
    jobs, outs, tmps = {}, {}, []
    t0 = time.monotonic()
    for name, peer in (("a", "b"), ("b", "a")):
        tmps.append(tempfile.mkdtemp(prefix="w2sr"))
        spec = LaunchSpec(recipe=Path("recipes/tiny/slurm.yaml").absolute(), run_dir=tmp_path / name, nodes=1,
                          cpus_per_node=1, time="10", env=dict([EXACT_STEPS.split("=")], W2S_RAY_TMPDIR=tmps[-1],
                                                               W2S_RAY_WAIT_S="120"))
        script = write_scripts(spec)
        outs[name] = tmp_path / f"{name}.json"
        jobs[name] = slurm_loopback.sbatch([str(script), sys.executable, str(PROBE), str(outs[name]),
                                            str(tmp_path / f"{peer}.json")])
    try:
        infos = {n: slurm_loopback.wait_job(j, timeout_s=300) for n, j in jobs.items()}
        print(f"two loopback jobs: {time.monotonic() - t0:.1f}s wall")
        logs = "\n".join(_job_logs(tmp_path / n) for n in jobs)
        assert all(i["JobState"] == "COMPLETED" and i["ExitCode"] == "0:0" for i in infos.values()), logs
        plans = {n: _plan_ports(tmp_path / n / "slurm" / f"ray-ports-{j}.env") for n, j in jobs.items()}
        assert not plans["a"] & plans["b"]
        for name, job in jobs.items():
            seen = json.loads(outs[name].read_text())
            job_out = (tmp_path / name / "slurm" / f"job-{job}.out").read_text()
            assert "address 127.0.0.1 is a loopback address; Ray registers this host as " + host_ip in job_out
            assert "--cpus-per-task=1 " in job_out and "1 CPU(s) (allowed: " in (
                tmp_path / name / "slurm" / f"ray-n1-{job}.log").read_text()
            assert seen["saw_peer"], "the two jobs did not overlap"
            assert seen["address"].startswith(f"{host_ip}:") and int(seen["address"].rsplit(":")[1]) in plans[name]
            assert [(n["ip"], n["cpus"]) for n in seen["nodes"] if n["alive"]] == [(host_ip, 1.0)]
            assert seen["task_ip"] == host_ip
            _check_bindings(seen["listen"], tmp_path / name / "slurm" / f"ray-ports-{job}.env", host_ip)
    finally:
        for t in tmps:
            shutil.rmtree(t, ignore_errors=True)
    assert all(_our_ray_processes(t) == [] for t in tmps)


def _check_bindings(listen: list[list], plan_file: Path, ip: str) -> None:
    """What the job's Ray listens on, against launch/README.md: the Ray client server and the dashboard agent's
    HTTP port only on the job's address (and loopback), the runtime env agent only on the job's address, no
    dashboard; what listens on all interfaces is only what Ray offers no choice for."""
    values = {}
    for line in plan_file.read_text().splitlines():
        if line.startswith("W2S_RAY_") and "=" in line:
            k, v = line.split("=", 1)
            values[k] = [int(x) for x in v.split("#")[0].strip().strip("'").split()]
    (nm, om, agent_http, agent_grpc, rt_env, metrics, w_lo, w_hi), = [v for k, v in values.items() if "NODE" in k]
    by_port: dict[int, set[str]] = {}
    for addr, port in listen:
        by_port.setdefault(port, set()).add(addr)
    wildcard = {"0.0.0.0", "::"}
    assert by_port.get(values["W2S_RAY_CLIENT_SERVER_PORT"][0]) == {ip, "127.0.0.1"}, by_port
    assert by_port.get(agent_http) == {ip, "127.0.0.1"}, by_port
    assert by_port.get(rt_env) == {ip}, by_port
    assert values["W2S_RAY_DASHBOARD_PORT"][0] not in by_port
    on_all = {p for p, addrs in by_port.items() if addrs & wildcard}
    allowed = {values["W2S_RAY_PORT"][0], nm, om, agent_grpc, metrics} | set(range(w_lo, w_hi + 1))
    block = set(range(values["W2S_RAY_PORT"][0], w_hi + 1))
    assert on_all & block <= allowed, sorted(on_all & block)
