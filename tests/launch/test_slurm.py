"""`w2s launch slurm`: rendering, refusal, dry run; and (marker `slurm`) real jobs on a local two-node Slurm."""

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
from w2s.launch.ray_wait import missing_nodes
from w2s.launch.slurm import TEMPLATE_DIR, LaunchSpec, render, write_scripts

sys.path.insert(0, str(Path(__file__).parent))
from slurm_cluster import LocalSlurmCluster, SlurmUnavailable, _free_port, ensure_slurm_installed  # noqa: E402

W2S = str(Path(sys.executable).with_name("w2s"))


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
                        overrides=["eval.judge.model=my judge's dir"]))
    assert "--gpus-per-node" not in text and "#SBATCH --cpus-per-task=16" in text and "--exclusive" not in text
    assert "--partition" not in text and "--account" not in text
    assert """'eval.judge.model=my judge'"'"'s dir'""" in text


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
@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """munged + slurmctld + slurmd n1, n2 (netns mode where possible), stopped by PID at the end."""
    if os.geteuid() != 0:
        pytest.skip("a local Slurm cluster needs root (munged, slurmd, network namespaces)")
    try:
        install_s = ensure_slurm_installed()
    except SlurmUnavailable as e:
        pytest.skip(f"Slurm unavailable: {e}")
    cluster = LocalSlurmCluster(tmp_path_factory.mktemp("slurm"), nodes=2, cpus_per_node=1)
    try:
        cluster.start()
    except SlurmUnavailable as e:
        cluster.stop()
        pytest.skip(f"local Slurm did not start: {e}")
    except BaseException:
        cluster.stop()
        raise
    cluster.timings["install_s"] = install_s
    print(f"\nslurm: mode {cluster.effective_mode} {cluster.fallback_reason} nodes {cluster.node_addrs} "
          f"install {install_s:.1f}s start {cluster.timings['daemon_start_s']:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def ray_tmp():
    """A short Ray temp dir (Unix socket paths must stay under 107 bytes)."""
    path = tempfile.mkdtemp(prefix="w2sr")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _launch(slurm: LocalSlurmCluster, run_dir: Path, ray_tmp: str, *overrides: str) -> str:
    r = subprocess.run([W2S, "launch", "slurm", "tiny/slurm", "--nodes", "2", "--gpus-per-node", "0", "--time", "15",
                        "--run-dir", str(run_dir), "--env", f"W2S_RAY_PORT={_free_port()}",
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
    assert alive_ips == sorted(slurm.node_addrs.values()), info["nodes"]
    trainer_ips = {a["node_ip"] for a in info["actors"] if a["role"] == "trainer"}
    assert trainer_ips == set(slurm.node_addrs.values()), info["actors"]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert metrics


@pytest.mark.slurm
def test_two_node_job_runs_w2s_on_ray_across_both_nodes(slurm, tmp_path, ray_tmp, tiny_weak, tiny_strong):
    run_dir = tmp_path / "run"
    t0 = time.monotonic()
    job = _launch(slurm, run_dir, ray_tmp)
    info = slurm.wait_job(job, timeout_s=400)
    wall = time.monotonic() - t0
    logs = _job_logs(run_dir)
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", logs
    print(f"job {job}: {wall:.1f}s wall, nodes {info.get('NodeList')}")
    _check_two_node_run(slurm, run_dir)
    for name in ("w2s.sbatch", "ray_cluster.sh", f"job-{job}.out", f"driver-{job}.log", f"ray-n1-{job}.log",
                 f"ray-n2-{job}.log"):
        assert (run_dir / "slurm" / name).is_file(), name
    assert "Ray cluster of 2 nodes up" in (run_dir / "slurm" / f"job-{job}.out").read_text()
    assert _our_ray_processes(ray_tmp) == []  # torn down by PID, nothing left behind


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
    """A hard kill (scancel, no warning) mid-run, then the kept script submitted again: the run resumes."""
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
    assert _our_ray_processes(ray_tmp) == []
