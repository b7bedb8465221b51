"""scripts/suite_timings.py: a `make test` log read into the results file the README quotes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "suite_timings.py"
spec = importlib.util.spec_from_file_location("suite_timings", SCRIPT)
suite_timings = importlib.util.module_from_spec(spec)
spec.loader.exec_module(suite_timings)

# As bootstrap.sh, scripts/test.sh and pytest print them (colour codes included).
LOG = """\x1b[1m[bootstrap 05:59:20] environment ready in 93 s\x1b[0m
\x1b[1m[test 05:59:31] pytest, the whole suite (2 workers), git d4e1b95\x1b[0m
[gw0] [ 99%] PASSED tests/test_ports.py::test_a_port_something_listens_on_is_passed_over
============================= slowest 60 durations =============================
381.25s call     tests/controller/test_rlhf.py::test_two_ppo_rounds@serial
138.58s setup    tests/interpret/test_interpret.py::test_lat_then_control@trained-aligner
90.80s call     tests/popalign/test_pipeline.py::test_seven_strategies
=========================== short test summary info ============================
SKIPPED [1] tests/generation/test_vllm_engine.py:210: needs a CUDA GPU
=========== 520 passed, 4 skipped, 20 warnings in 1462.09s (0:24:22) ===========
"""


def test_a_make_test_log_gives_the_counts_the_time_and_the_slowest_with_their_groups(tmp_path):
    log = tmp_path / "test.log"
    log.write_text(LOG)
    out = tmp_path / "test-suite.md"
    assert suite_timings.main([str(log), "--write", str(out)]) == 0
    text = out.read_text()
    assert "at git d4e1b95" in text and "environment set-up from nothing 93 s" in text
    assert "**520 passed, 4 skipped, 20 warnings** in **24 min 22 s** (1462 s)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "`tests/" in line]
    assert rows == ["| 381 | call | `tests/controller/test_rlhf.py::test_two_ppo_rounds` | serial |",
                    "| 139 | setup | `tests/interpret/test_interpret.py::test_lat_then_control` | trained-aligner |",
                    "| 91 | call | `tests/popalign/test_pipeline.py::test_seven_strategies` | - |"]


@pytest.mark.parametrize("cut, says", [
    (lambda log: "\n".join(log.splitlines()[:-1]), "no pytest summary line"),  # a run cut off before its end
    (lambda log: log.replace("the whole suite", "fast tier"), "not a `make test` log"),  # make check's timings
])
def test_a_log_of_no_whole_run_is_refused_naming_it(tmp_path, capsys, cut, says):
    log = tmp_path / "test.log"
    log.write_text(cut(LOG))
    assert suite_timings.main([str(log), "--write", str(tmp_path / "out.md")]) == 2
    err = capsys.readouterr().err
    assert str(log) in err and says in err and not (tmp_path / "out.md").exists()


def test_a_make_check_log_is_read_as_the_fast_tier_only_when_asked(tmp_path, capsys):
    """`make check` runs pytest -q: its summary line is undecorated, and its file says it is the fast tier."""
    log = tmp_path / "check.log"
    log.write_text("\x1b[1m[test 10:00:01] pytest, fast tier (not slow, not slurm), git 0a9cb29\x1b[0m\n"
                   "........ [100%]\n============================= slowest 10 durations ======\n"
                   "4.51s call     tests/bench/test_train.py::test_flags\n"
                   "434 passed, 3 deselected in 58.40s\n")
    out = tmp_path / "check.md"
    assert suite_timings.main([str(log), "--write", str(out)]) == 2  # not the whole suite's
    assert "not a `make test` log" in capsys.readouterr().err and not out.exists()
    assert suite_timings.main([str(log), "--tier", "check", "--write", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Results: the fast tier (`make check`)") and "`make check` at git 0a9cb29" in text
    assert "**434 passed, 3 deselected** in **0 min 58 s** (58 s)" in text
    assert "| 5 | call | `tests/bench/test_train.py::test_flags` | - |" in text
