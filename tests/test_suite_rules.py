"""The suite's own rules (tests/conftest.py), checked where they apply."""

from __future__ import annotations

import os

import pytest

from tests.conftest import SERIAL_GROUP, SHARED_RUN_GROUPS


def _skip_unless_xdist_loadgroup(request) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER") or not getattr(request.config.option, "loadgroup", False):
        pytest.skip("checks the grouping of an xdist --dist loadgroup run (make test)")


def test_vllm_and_slurm_tests_run_one_at_a_time_under_xdist(request):
    """Under `make test` (xdist, --dist loadgroup) every vLLM test and every Slurm test carries the one group
    "serial", so that xdist sends them all to one worker: two vLLM engines at once would double the suite's memory,
    two Slurm clusters would share ports, a Slurm job's Ray beside an engine's start can miss Ray's start-up wait.
    (A pytest whose node ids xdist cannot suffix drops the groups silently.)"""
    _skip_unless_xdist_loadgroup(request)
    serial = [item.nodeid for item in request.session.items if "vllm" in item.keywords or "slurm" in item.keywords]
    if not serial:
        pytest.skip("no vLLM or Slurm test selected")
    assert all(n.endswith(f"@{SERIAL_GROUP}") for n in serial), serial[:3]  # one group: one worker, one at a time


def test_tests_sharing_a_run_built_once_run_in_one_worker_under_xdist(request):
    """Under `make test` every test using a session fixture built by a whole CLI run (tests/conftest.py,
    SHARED_RUN_GROUPS) carries that fixture's group, so that the run is built once, not once per worker."""
    _skip_unless_xdist_loadgroup(request)
    sharing = {item.nodeid: group for item in request.session.items
               for fixture, group in SHARED_RUN_GROUPS.items() if fixture in item.fixturenames}
    if not sharing:
        pytest.skip("no test of a shared run selected")
    assert all(nodeid.endswith(f"@{group}") for nodeid, group in sharing.items()), sharing
