"""A finished tiny/dpo run, built once per test process and shared by the tests that only read it or copy it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controller.test_loop import SMALL, w2s

# The tests that use `finished_dpo_run` carry the xdist group "finished-dpo-run", so that under `make test` they run
# in one worker and the run is built once (a fixture of session scope is built once per worker).


@pytest.fixture(scope="session")
def finished_dpo_run(tmp_path_factory, tiny_strong) -> Path:
    """An uninterrupted `w2s run tiny/dpo` (SMALL, 2 rounds). Read it, or copy it before writing into it."""
    run = tmp_path_factory.mktemp("finished-dpo") / "run"
    done = w2s("run", "tiny/dpo", *SMALL, f"run.dir={run}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run
