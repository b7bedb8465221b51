"""A real Slurm cluster of one or more nodes on one machine, for tests of the Slurm launch scripts.

It runs a private munged (its own key and socket), slurmctld and one slurmd per simulated node, all
configured through ``SLURM_CONF`` in a scratch directory (the system's Slurm configuration is never
touched). Where network namespaces can be made (root, iproute2), every node but the first runs in its
own namespace with its own address on a veth pair, so node discovery sees distinct IPs ("netns" mode);
otherwise all nodes share 127.0.0.1 ("shared" mode). Every daemon is stopped by its PID, and the
namespace and veth are removed, by :meth:`LocalSlurmCluster.stop`.

Usable on its own for debugging::

    python tests/launch/slurm_cluster.py SCRATCH_DIR   # starts the cluster, prints SLURM_CONF, waits for Ctrl-C
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SLURM_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]


class SlurmUnavailable(RuntimeError):
    """Slurm cannot be installed or started here (the tests skip with this message)."""


def ensure_slurm_installed(timeout_s: float = 300.0) -> float:
    """Install Slurm and munge from Debian packages when ``slurmctld`` is missing.

    Returns:
        Seconds spent installing (0 when already installed).

    Raises:
        SlurmUnavailable: not root, no apt-get, or the install failed.
    """
    if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
        return 0.0
    if os.geteuid() != 0:
        raise SlurmUnavailable("Slurm is not installed and installing it needs root")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("Slurm is not installed and there is no apt-get to install it")
    t0 = time.monotonic()
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", *SLURM_PACKAGES]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        if r.returncode != 0:
            raise SlurmUnavailable(f"`{' '.join(cmd)}` failed: {r.stderr.strip()[-500:]}")
    return time.monotonic() - t0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=True, **kw)


def _read_pid(path: Path, timeout_s: float = 15.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            text = path.read_text().strip()
            if text:
                return int(text)
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.1)
    raise SlurmUnavailable(f"daemon did not write its pid file {path}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class LocalSlurmCluster:
    """munged + slurmctld + one slurmd per node, in ``workdir``; use as a context manager.

    Attributes:
        workdir: scratch directory for config, state, spool and logs.
        nodes: number of simulated nodes (n1, n2, ...).
        cpus_per_node: CPUs each node advertises.
        mode: "netns" (each node after the first in its own network namespace), "shared" (all on
            127.0.0.1, each slurmd on its own port) or "auto" (netns when possible and there is more than
            one node; a single node is always "shared", i.e. a workstation whose NodeAddr is 127.0.0.1).
        task_plugin: Slurm's TaskPlugin; "task/affinity" pins every task to the CPUs Slurm gave it, as
            production clusters do (so a step that asks for too few CPUs shows in its affinity).
    """

    workdir: Path
    nodes: int = 2
    cpus_per_node: int = 1
    mem_mb_per_node: int = 4000
    mode: str = "auto"
    task_plugin: str = "task/none"
    node_addrs: dict[str, str] = field(default_factory=dict)
    fallback_reason: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    _pids: list[tuple[str, int]] = field(default_factory=list)
    _netns: list[str] = field(default_factory=list)
    _veths: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------------------------------- lifecycle
    @property
    def conf(self) -> Path:
        return self.workdir / "slurm.conf"

    @property
    def node_names(self) -> list[str]:
        return [f"n{i + 1}" for i in range(self.nodes)]

    def env(self) -> dict[str, str]:
        """The environment for Slurm clients (sbatch, squeue, ...) talking to this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def __enter__(self) -> LocalSlurmCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        """Start munged, the network (netns mode), slurmctld and the slurmds; wait until all nodes are idle."""
        t0 = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)  # munged refuses keys/sockets in writable-by-others directories
        for sub in ("state", "spool", "log", "munge"):
            (self.workdir / sub).mkdir(exist_ok=True)
        self._start_munge()
        self._setup_network()
        self._write_conf()
        env = self.env()
        _run(["slurmctld"], env=env)
        self._pids.append(("slurmctld", _read_pid(self.workdir / "slurmctld.pid")))
        for name in self.node_names:
            cmd = ["slurmd", "-N", name]
            ns = self._ns_of(name)
            if ns:  # `ip netns exec` remounts /sys and breaks slurmd's cgroup probe; nsenter --net does not
                cmd = ["nsenter", f"--net=/run/netns/{ns}", "env", f"SLURM_CONF={self.conf}", *cmd]
            _run(cmd, env=env)
            self._pids.append((f"slurmd-{name}", _read_pid(self.workdir / f"slurmd-{name}.pid")))
        self._wait_idle(timeout_s=60)
        self.timings["daemon_start_s"] = time.monotonic() - t0

    def stop(self) -> None:
        """Cancel the cluster's jobs, stop every daemon this object started (by PID, last started first) and
        any process left from its jobs, and remove the network."""
        if any(name == "slurmctld" for name, _ in self._pids):
            self._cancel_all_jobs(timeout_s=30)
        for _name, pid in reversed(self._pids):
            if not _alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
                try:  # reap if it is our child (it is not, the daemons fork; harmless otherwise)
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        self._pids.clear()
        self._kill_leftovers()
        for veth in self._veths:
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
        for ns in self._netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._veths.clear()
        self._netns.clear()

    def _cancel_all_jobs(self, timeout_s: float) -> None:
        """scancel every job of this cluster and wait until its processes are gone (stopping slurmd does not
        stop the job steps it started)."""
        env = self.env()
        r = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
        jobs = r.stdout.split()
        if jobs:
            subprocess.run(["scancel", *jobs], env=env, capture_output=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._job_processes():
            time.sleep(0.5)

    def _job_processes(self) -> list[int]:
        """PIDs of processes started for this cluster's jobs: their environment names this cluster's SLURM_CONF
        (slurmstepd inherits it from our slurmd, job processes from sbatch). The daemons and their direct
        helpers (slurmscriptd) are not counted."""
        marker = f"SLURM_CONF={self.conf}".encode()
        daemons = {pid for _, pid in self._pids}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in daemons or int(entry.name) == os.getpid():
                continue
            try:
                env = (entry / "environ").read_bytes()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid in daemons:
                continue
            if marker in env.split(b"\0"):
                found.append(int(entry.name))
        return found

    def _kill_leftovers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._job_processes()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if pids and sig == signal.SIGTERM:
                time.sleep(3)

    # ------------------------------------------------------------------------------------------- pieces
    def _start_munge(self) -> None:
        m = self.workdir / "munge"
        key = m / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        self.munge_socket = m / "munge.socket"
        _run(["munged", "--force", f"--socket={self.munge_socket}", f"--key-file={key}",
              f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}", f"--seed-file={m / 'munged.seed'}"])
        self._pids.append(("munged", _read_pid(m / "munged.pid")))

    def _ns_of(self, node: str) -> str:
        return f"w2s{os.getpid()}{node}" if node in self._ns_nodes else ""

    def _setup_network(self) -> None:
        """netns mode: n1 on the host end of each veth, n2.. inside their namespaces, one 10.77.X.0/24 per run.

        Each namespaced node reaches n1 (and n1 reaches it) over its veth; namespaced nodes do not reach each
        other (no forwarding is enabled on the host), which is enough for a head on n1 and workers elsewhere.
        """
        self._ns_nodes: set[str] = set()
        if self.mode == "shared" or (self.mode == "auto" and (self.nodes == 1 or not self._can_netns())):
            self.node_addrs = dict.fromkeys(self.node_names, "127.0.0.1")
            self.effective_mode = "shared"
            return
        used = _run(["ip", "-4", "-o", "addr"]).stdout
        subnet = next(f"10.77.{x}" for x in random.sample(range(1, 250), 249) if f"10.77.{x}." not in used)
        self.node_addrs = {self.node_names[0]: f"{subnet}.1"}
        first_ip = f"{subnet}.1"
        tag = os.getpid() % 100000  # interface names: at most 15 characters, unique per test process
        for i, name in enumerate(self.node_names[1:], start=2):
            ns, host_end, ns_end = self._ns_of_new(name), f"w2h{tag}{i}", f"w2n{tag}{i}"
            _run(["ip", "netns", "add", ns])
            self._netns.append(ns)
            _run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end])
            self._veths.append(host_end)
            _run(["ip", "link", "set", ns_end, "netns", ns])
            # The host end carries n1's address (the same one on every veth: a /32 route per peer keeps it unique).
            _run(["ip", "addr", "add", f"{first_ip}/32", "dev", host_end])
            _run(["ip", "link", "set", host_end, "up"])
            _run(["ip", "route", "add", f"{subnet}.{i}/32", "dev", host_end])
            ip_ns = ["ip", "netns", "exec", ns, "ip"]
            _run([*ip_ns, "addr", "add", f"{subnet}.{i}/32", "dev", ns_end])
            _run([*ip_ns, "link", "set", ns_end, "up"])
            _run([*ip_ns, "link", "set", "lo", "up"])
            _run([*ip_ns, "route", "add", f"{first_ip}/32", "dev", ns_end])
            self.node_addrs[name] = f"{subnet}.{i}"
        self.effective_mode = "netns"

    def _ns_of_new(self, node: str) -> str:
        self._ns_nodes.add(node)
        return self._ns_of(node)

    def _can_netns(self) -> bool:
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("nsenter"):
            self.fallback_reason = "network namespaces need root, iproute2 and nsenter"
            return False
        probe = f"w2sprobe{os.getpid()}"
        r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if r.returncode != 0:
            self.fallback_reason = f"`ip netns add` failed: {r.stderr.strip()}"
            return False
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
        return True

    def _write_conf(self) -> None:
        w = self.workdir
        ctld_addr = self.node_addrs[self.node_names[0]]
        host = socket.gethostname().split(".")[0]
        shared = self.effective_mode == "shared"
        lines = [
            "ClusterName=w2sci", f"SlurmctldHost={host}({ctld_addr})", "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", "CredType=cred/munge", f"AuthInfo=socket={self.munge_socket},cred_expire=5",
            "MailProg=/bin/true",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            f"StateSaveLocation={w / 'state'}", f"SlurmdSpoolDir={w / 'spool'}/%n",
            f"SlurmctldPidFile={w / 'slurmctld.pid'}", f"SlurmdPidFile={w / 'slurmd-%n.pid'}",
            f"SlurmctldLogFile={w / 'log/slurmctld.log'}", f"SlurmdLogFile={w / 'log/slurmd-%n.log'}",
            "ProctrackType=proctrack/linuxproc", f"TaskPlugin={self.task_plugin}",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none", "SwitchType=switch/none",
            "MpiDefault=none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2",
            "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=5", "MinJobAge=300", "JobRequeue=1",
        ]
        for name in self.node_names:
            port = f" Port={_free_port()}" if shared else ""  # several slurmd share one address: distinct ports
            hostname = f" NodeHostname={host}" if shared else ""
            lines.append(f"NodeName={name}{hostname} NodeAddr={self.node_addrs[name]}{port} "
                         f"CPUs={self.cpus_per_node} RealMemory={self.mem_mb_per_node} State=UNKNOWN")
        lines.append(f"PartitionName=debug Nodes={','.join(self.node_names)} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")  # Slurm wants one key per line for the global keys

    def _wait_idle(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        out = ""
        while time.monotonic() < deadline:
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], env=self.env(), capture_output=True, text=True)
            out = r.stdout + r.stderr
            states = dict(line.split() for line in r.stdout.splitlines() if len(line.split()) == 2)
            if len(states) == self.nodes and all(s == "idle" for s in states.values()):
                return
            time.sleep(0.3)
        raise SlurmUnavailable(f"Slurm nodes not idle after {timeout_s:.0f}s: {out.strip()}; "
                               f"logs in {self.workdir}/log")

    # ------------------------------------------------------------------------------------------- jobs
    def sbatch(self, args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        """Submit with ``sbatch --parsable ARGS``; returns the job id."""
        r = subprocess.run(["sbatch", "--parsable", *args], env={**self.env(), **(env or {})}, cwd=cwd,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"sbatch failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty when Slurm forgot the job)."""
        r = subprocess.run(["scontrol", "-o", "show", "job", job_id], env=self.env(), capture_output=True, text=True)
        info: dict[str, str] = {}
        for tok in r.stdout.split():
            if "=" in tok:
                k, v = tok.split("=", 1)
                info.setdefault(k, v)
        return info

    def wait_job(self, job_id: str, timeout_s: float, until: tuple[str, ...] = ("COMPLETED", "FAILED", "CANCELLED",
                 "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")) -> dict[str, str]:
        """Poll until the job reaches one of ``until``; returns its final info.

        Raises:
            TimeoutError: naming the job's last state and reason.
        """
        deadline = time.monotonic() + timeout_s
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job_info(job_id)
            if info.get("JobState") in until:
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job_id} not in {until} after {timeout_s:.0f}s: state {info.get('JobState')} "
                           f"reason {info.get('Reason')}")

    def cancel(self, job_id: str, *extra: str) -> None:
        subprocess.run(["scancel", *extra, job_id], env=self.env(), check=True, capture_output=True)


if __name__ == "__main__":
    import sys

    ensure_slurm_installed()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with LocalSlurmCluster(Path(sys.argv[1])) as c:
        print(f"mode {c.effective_mode} {c.fallback_reason}; nodes {c.node_addrs}; "
              f"started in {c.timings['daemon_start_s']:.1f}s\nexport SLURM_CONF={c.conf}", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
