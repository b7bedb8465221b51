"""A private Ray instance is gone within seconds of its driver's death, however the driver dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from w2s.reaper import TAG, carries, tagged


def _owned_by(pid: int) -> list[psutil.Process]:
    """Live processes whose W2S_RAY_OWNER names the driver ``pid`` (read from the raw environment block)."""
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if carries(p.pid, f"{pid}-", prefix=True) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:
            pass
    return found


@pytest.mark.slow  # a real w2s run: Ray and its actors start
def test_a_sigkilled_driver_takes_its_private_ray_instance_with_it(tmp_path):
    log_path = tmp_path / "driver.log"
    args = ["run", "tiny/dpo", f"run.dir={tmp_path / 'run'}", "loop.prompts_per_round=4", "eval.max_prompts=4"]
    with open(log_path, "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "w2s.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.time() + 300
        while "starting 1 generator actor(s)" not in log_path.read_text():
            assert driver.poll() is None and time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        # Ray starts its agents alongside the first actors and renames them once they run: wait for all of them.
        deadline = time.time() + 60
        while True:
            descendants = [p for p in psutil.Process(driver.pid).children(recursive=True)
                           if "w2s.reaper" not in " ".join(p.cmdline())]
            names = " ".join(" ".join(p.cmdline()) for p in descendants)
            if all(n in names for n in ("gcs_server", "raylet", "ray::DashboardAgent")) or time.time() > deadline:
                break
            time.sleep(0.2)
        assert "gcs_server" in names and "raylet" in names and "ray::DashboardAgent" in names, names[-2000:]
        # Ray's title rewrite zeroes the start of its agents' environment (the tag too, at times): the reaper knows
        # them as the driver's descendants as well.
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as the OOM killer would
        driver.wait(timeout=30)
        deadline = time.time() + 15
        while any(p.is_running() for p in descendants) and time.time() < deadline:
            time.sleep(0.5)
        left = [(p.pid, " ".join(p.cmdline())[:80]) for p in descendants + _owned_by(driver.pid) if p.is_running()
                and p.status() != psutil.STATUS_ZOMBIE]
        assert left == [], left
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        for p in _owned_by(driver.pid):
            p.kill()


@pytest.mark.slow  # five Python processes start and end
def test_the_reaper_kills_only_what_carries_its_tag_once_the_driver_is_gone(tmp_path):
    """A stand-in driver starts two tagged processes and one untagged, then dies: the reaper stops the two."""
    tag = f"999999-{time.time():.3f}"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    mine = [subprocess.Popen(sleeper, env={**os.environ, TAG: tag}, start_new_session=True) for _ in range(2)]
    other = subprocess.Popen(sleeper, start_new_session=True)
    # A stand-in driver that starts the reaper as its child (as w2s.reaper.start does), then exits.
    launcher = (f"import subprocess, sys, time; r = subprocess.Popen([sys.executable, '-m', 'w2s.reaper', "
                f"str(__import__('os').getpid()), {tag!r}]); print(r.pid, flush=True); time.sleep(1)")
    driver = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE, text=True)
    reaper = psutil.Process(int(driver.stdout.readline()))
    try:
        assert {p.pid for p in tagged(tag)} == {p.pid for p in mine}
        driver.wait(timeout=10)
        reaper.wait(timeout=20)  # it noticed (re-parented), stopped the two, and exited (TimeoutExpired if not)
        assert all(p.wait(timeout=5) is not None for p in mine) and tagged(tag) == []
        assert other.poll() is None  # not its to stop
    finally:
        for p in [*mine, other, driver]:
            if p.poll() is None:
                p.kill()
                p.wait()
        if reaper.is_running():
            reaper.kill()


@pytest.mark.slow  # four Python processes start and end
def test_what_a_cut_short_shutdown_orphaned_is_swept_when_the_driver_exits(tmp_path):
    """A stand-in driver starts the reaper, then a child that starts a grandchild and exits: the grandchild is
    re-parented away from the driver, as Ray's agents are when Ctrl-C cuts ``ray.shutdown`` short, and its title
    rewrite zeroes its environment block, tag included. The driver's normal stop still has it swept."""
    ready = tmp_path / "grandchild.pid"
    grandchild = ("import os, setproctitle, sys, time; setproctitle.setproctitle('ray::DashboardAgent'); "
                  "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)")
    driver_code = f"""
import os, subprocess, sys, time
from w2s import reaper
r = reaper.start()
# The child lives long enough for the reaper to see its grandchild (Ray's agents live for the whole run).
subprocess.run([sys.executable, "-c", "import subprocess as s, sys, time; s.Popen(sys.argv[1:], stdout=s.DEVNULL, "
                "stderr=s.DEVNULL); time.sleep(2)", sys.executable, "-c", {grandchild!r}, {str(ready)!r}], check=True)
print(reaper.carries(int(open({str(ready)!r}).read()), os.environ[reaper.TAG]), flush=True)
reaper.stop(r)
"""
    driver = subprocess.run([sys.executable, "-c", driver_code], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != TAG})
    pid = int(ready.read_text())
    try:
        assert driver.returncode == 0, driver.stderr[-2000:]
        assert driver.stdout.split() == ["False"]  # its tag is gone: only the reaper's lineage knows it
        deadline = time.time() + 10
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.2)
        assert not _alive(pid)
    finally:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
