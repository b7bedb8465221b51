"""A finished tiny/dpo run, built once per test process and shared by the tests that only read it or copy it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.controller.test_loop import SMALL, w2s

# The tests that use `finished_dpo_run` run in one worker under `make test` (tests/conftest.py, SHARED_RUN_GROUPS).


@pytest.fixture(scope="session")
def finished_dpo_run(tmp_path_factory, tiny_strong) -> Path:
    """An uninterrupted `w2s run tiny/dpo` (SMALL, 2 rounds). Read it, or copy it before writing into it."""
    run = tmp_path_factory.mktemp("finished-dpo") / "run"
    done = w2s("run", "tiny/dpo", *SMALL, f"run.dir={run}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run
