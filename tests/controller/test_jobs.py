"""Every job a recipe can name has one entry in one table (interpret, which has no run of its own, aside)."""

from __future__ import annotations

from w2s.config.schema import JOBS as JOB_NAMES
from w2s.controller.jobs import JOBS


def test_every_job_a_recipe_can_name_is_in_the_table():
    assert set(JOBS) | {"interpret"} == set(JOB_NAMES)
    assert JOBS["loop"].preflight is not None  # the loop reads and checks its prompts before any actor starts
    for job in JOBS.values():
        __import__(job.module)  # where its stages live
