"""The CLI turns the errors a user can cause into one line naming the path, the problem and the fix (exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def w2s(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "w2s.cli", *args], capture_output=True, text=True, timeout=300)


def _one_line_error(result: subprocess.CompletedProcess, *parts: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(p in line for p in parts), line


def test_permission_error_names_the_path_and_the_fix():
    from w2s.cli import os_error_message

    e = PermissionError(13, "Permission denied", "/data/in.jsonl")
    assert os_error_message(e) == ("/data/in.jsonl: Permission denied; check the permissions of that path, or "
                                   "choose another location")


@pytest.mark.slow  # w2s run
def test_a_directory_given_as_output(tmp_path, tiny_weak):
    src = tmp_path / "in.jsonl"
    src.write_text('{"question": "q", "answer": "a"}\n')
    (tmp_path / "out").mkdir()
    _one_line_error(w2s("aligner", "correct", "--aligner", tiny_weak, "--input", str(src), "--output",
                        str(tmp_path / "out")), str(tmp_path / "out"), "not a directory")


def test_missing_or_empty_aligner_directory(tmp_path):
    """Caught by the config checks (exit 2, naming the key) before any model is loaded."""
    src = tmp_path / "in.jsonl"
    src.write_text('{"question": "q", "answer": "a"}\n')
    (tmp_path / "empty").mkdir()
    for aligner, problem in ((tmp_path / "nope", "does not exist"), (tmp_path / "empty", "without config.json")):
        result = w2s("aligner", "correct", "--aligner", str(aligner), "--input", str(src), "--output",
                     str(tmp_path / "o.jsonl"))
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"model.aligner.path = '{aligner}': " in result.stderr and problem in result.stderr


def test_a_model_path_that_is_no_model_directory_at_load_time(tmp_path):
    from w2s.assets import resolve_model_path
    from w2s.errors import W2SError

    with pytest.raises(W2SError, match="does not exist"):
        resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(W2SError, match="not a model directory"):
        resolve_model_path(str(tmp_path))
    assert resolve_model_path("ORG/name") == "ORG/name"  # a hub name passes through


def test_corrupt_run_json_in_status_and_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text('{"recipe": ')
    _one_line_error(w2s("status", str(run)), "run.json: corrupt")
    _one_line_error(w2s("run", "tiny/dpo", f"run.dir={run}"), "run.json: corrupt")
    (run / "run.json").write_text(json.dumps({"recipe": "tiny/dpo", "attempts": [{"started": "now"}]}))
    (run / "round-01" / "generate").mkdir(parents=True)
    (run / "round-01" / "generate" / "manifest.json").write_text("{")
    _one_line_error(w2s("status", str(run)), "manifest.json: corrupt")


def test_run_dir_under_a_read_only_directory(tmp_path):
    from w2s.cli import os_error_message

    e = OSError(30, "Read-only file system", str(tmp_path / "ro" / "run"))
    assert os_error_message(e) == f"{tmp_path / 'ro' / 'run'}: Read-only file system; the file system is " \
                                  "read-only; choose a writable location"
    full = OSError(28, "No space left on device", "/data/run/metrics.jsonl")
    assert "disk is full" in os_error_message(full) and "re-run to resume" in os_error_message(full)
