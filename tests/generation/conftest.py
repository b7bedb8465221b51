"""Fixtures of the generation tests: the real SmolLM2 model."""

from __future__ import annotations

import os

import pytest

# The asset cache the user had before tests/conftest.py's `w2s_cache` points W2S_CACHE at a private folder:
# SmolLM2 is a 93 MB download, built once per machine rather than once per test run.
_USER_CACHE = os.environ.get("W2S_CACHE")


@pytest.fixture(scope="session")
def smollm2() -> str:
    """Path of SmolLM2-135M-Instruct (asset:smollm2), built into the user's asset cache on first use."""
    from w2s.assets import ensure_asset

    with pytest.MonkeyPatch.context() as mp:
        if _USER_CACHE is None:
            mp.delenv("W2S_CACHE", raising=False)
        else:
            mp.setenv("W2S_CACHE", _USER_CACHE)
        return str(ensure_asset("smollm2", progress=lambda _msg: None))
