"""The suite's own rules (tests/conftest.py), checked where they apply."""

from __future__ import annotations

import os

import pytest


def test_vllm_and_slurm_tests_run_one_at_a_time_under_xdist(request):
    """Under `make test` (xdist, --dist loadgroup) every vLLM test and every Slurm test carries the one group
    "serial", so that xdist sends them all to one worker: two vLLM engines at once would double the suite's memory,
    two Slurm clusters would share ports, a Slurm job's Ray beside an engine's start can miss Ray's start-up wait.
    (A pytest whose node ids xdist cannot suffix drops the groups silently.)"""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not getattr(request.config.option, "loadgroup", False):
        pytest.skip("checks the grouping of an xdist --dist loadgroup run (make test)")
    serial = [item.nodeid for item in request.session.items if "vllm" in item.keywords or "slurm" in item.keywords]
    if not serial:
        pytest.skip("no vLLM or Slurm test selected")
    assert all(n.endswith("@serial") for n in serial), serial[:3]  # one group: one worker, one at a time
