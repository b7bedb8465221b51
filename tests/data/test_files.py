"""w2s.data.files: atomic writes, JSON Lines read back, and one writer per path across processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from w2s.data.files import WriterLock, append_jsonl, read_jsonl, write_jsonl
from w2s.errors import W2SError

HOLD = ("import sys, time; from w2s.data.files import WriterLock; "
        "lock = WriterLock(sys.argv[1], 'the thing').acquire(); print('held', flush=True); time.sleep(60)")


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_with_the_holders_pid_and_host(tmp_path):
    lock = tmp_path / "out.lock"
    proc = _holder(lock)
    try:
        with pytest.raises(W2SError, match=rf"the thing is being written by pid {proc.pid} on {os.uname().nodename}"):
            WriterLock(lock, "the thing").acquire()
    finally:
        proc.kill()
        proc.wait()


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    lock = tmp_path / "out.lock"
    proc = _holder(lock)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with WriterLock(lock, "the thing"):  # no stale lock after a crash
        pass


# A writer that forks a child before it dies (as a process being started is, until it execs): the child shares the
# lock's open file for ``sys.argv[2]`` seconds after the writer is gone.
FORK_AND_HOLD = ("import os, sys, time; from w2s.data.files import WriterLock; "
                 "lock = WriterLock(sys.argv[1], 'the thing').acquire()\n"
                 "if os.fork() == 0:\n    os.setsid(); time.sleep(float(sys.argv[2])); os._exit(0)\n"
                 "print('held', flush=True); time.sleep(60)")


def test_a_straggler_of_a_killed_writer_is_waited_for_then_named(tmp_path, monkeypatch):
    from w2s.data import files

    lock = tmp_path / "out.lock"
    for hold_s, wait_s in ((0.8, 15.0), (30.0, 0.5)):
        proc = subprocess.Popen([sys.executable, "-c", FORK_AND_HOLD, str(lock), str(hold_s)], stdout=subprocess.PIPE,
                                text=True)
        assert proc.stdout.readline().strip() == "held"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        monkeypatch.setattr(files, "STRAGGLER_WAIT_S", wait_s)
        if hold_s < wait_s:  # the straggler lets go within the wait: the rerun goes on
            WriterLock(lock, "the thing").acquire().release()
        else:  # it does not: refused, naming who still holds the lock
            with pytest.raises(W2SError, match=rf"pid {proc.pid} on .* that process has exited, but pid \d+ \(python"):
                WriterLock(lock, "the thing").acquire()
            for holder in files._holders(lock):  # the straggler, ours to stop
                os.kill(int(holder.split()[1]), signal.SIGKILL)


def test_release_and_reacquire_in_one_process(tmp_path):
    first = WriterLock(tmp_path / "x.lock", "x").acquire()
    with pytest.raises(W2SError):
        WriterLock(tmp_path / "x.lock", "x").acquire()
    first.release()
    WriterLock(tmp_path / "x.lock", "x").acquire().release()


def test_jsonl_round_trip_and_partial_last_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"a": 1}, {"b": "é"}])
    append_jsonl(path, {"c": 3})
    with open(path, "a") as f:
        f.write('{"d": ')  # a crash in the middle of an append
    assert read_jsonl(path) == [{"a": 1}, {"b": "é"}, {"c": 3}]


def test_two_drivers_on_one_run_dir(tmp_path):
    """A second `w2s run` on a run directory in use stops at once, naming the first one's pid."""
    run = tmp_path / "run"
    proc = _holder(run / ".w2s.lock")
    try:
        t0 = time.time()
        result = subprocess.run([sys.executable, "-m", "w2s.cli", "run", "tiny/dpo", f"run.dir={run}"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"pid {proc.pid}" in result.stderr and str(run) in result.stderr
        assert "ray:" not in result.stdout and time.time() - t0 < 60  # refused before any cluster started
    finally:
        proc.kill()
        proc.wait()


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    import os

    from w2s.data.files import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.html", "<p>hi</p>")
    finally:
        os.umask(old)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644  # readable by a web server or a colleague


def test_a_full_disk_names_the_file_it_failed_to_write(tmp_path, monkeypatch):
    """ENOSPC from write or fsync names no file; w2s's writers put the path in, and the CLI's one line shows it."""
    import errno

    from w2s.cli import os_error_message
    from w2s.data import files
    from w2s.eval.cache import JudgementCache

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    target = tmp_path / "out" / "summary.json"
    with pytest.raises(OSError) as e:
        files.atomic_write_json(target, {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert os_error_message(e.value).startswith(f"{target}: No space left on device")
    assert not target.exists() and list(target.parent.iterdir()) == []  # no temporary file left behind
    with pytest.raises(OSError, match="rows.jsonl"):
        files.append_jsonl(tmp_path / "rows.jsonl", {"a": 1})
    monkeypatch.undo()  # the cache's own close fsyncs
    with JudgementCache(tmp_path / "cache.jsonl") as cache:
        cache._file = open("/dev/full", "w", encoding="utf-8")  # a device that is always full
        with pytest.raises(OSError) as e:
            cache.put("k", "v")
        assert e.value.filename == str(tmp_path / "cache.jsonl")
        cache._file = open(tmp_path / "elsewhere", "w", encoding="utf-8")  # so that its close can flush
