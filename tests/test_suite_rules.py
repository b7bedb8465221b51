"""The suite's own rules (tests/conftest.py), checked where they apply."""

from __future__ import annotations

import os

import pytest


def test_vllm_and_slurm_tests_run_one_at_a_time_under_xdist(request):
    """Under `make test` (xdist, --dist loadgroup) every vLLM test and every Slurm test carries its group, so that
    xdist sends each group to one worker: two vLLM engines at once would double the suite's memory, two Slurm
    clusters would share ports. (A pytest whose node ids xdist cannot suffix drops the groups silently.)"""
    if not os.environ.get("PYTEST_XDIST_WORKER") or not getattr(request.config.option, "loadgroup", False):
        pytest.skip("checks the grouping of an xdist --dist loadgroup run (make test)")
    grouped = {group: [item.nodeid for item in request.session.items if group in item.keywords]
               for group in ("vllm", "slurm")}
    if not any(grouped.values()):
        pytest.skip("no vLLM or Slurm test selected")
    for group, nodeids in grouped.items():
        assert all(n.endswith(f"@{group}") for n in nodeids), (group, nodeids[:3])
