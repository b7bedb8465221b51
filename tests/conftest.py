"""Shared fixtures: offline environment, tiny model assets built once per test run, a private Ray."""

from __future__ import annotations

import os

# Any accidental model-hub access must fail fast, and no test may write to the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("WANDB_MODE", "disabled")

import pytest  # noqa: E402

# The asset cache the user had before `w2s_cache` points W2S_CACHE at a private folder: SmolLM2 is a 93 MB
# download, built once per machine rather than once per test run.
_USER_CACHE = os.environ.get("W2S_CACHE")


def pytest_collection_modifyitems(config, items):
    """Skip `gpu` tests without CUDA (checked lazily: torch is imported only when such a test exists)."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def w2s_cache(tmp_path_factory):
    """A private asset cache for the test run (the real SmolLM2 asset is shared, see `smollm2_path`)."""
    path = tmp_path_factory.mktemp("w2s-cache")
    old = os.environ.get("W2S_CACHE")
    os.environ["W2S_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("W2S_CACHE", None)
    else:
        os.environ["W2S_CACHE"] = old


@pytest.fixture(scope="session")
def tiny_weak(w2s_cache) -> str:
    """Path of the random tiny 'weak' Llama (asset:tiny-weak), built once per test run."""
    from w2s.assets import ensure_asset

    return str(ensure_asset("tiny-weak", progress=lambda _msg: None))


@pytest.fixture(scope="session")
def tiny_strong(w2s_cache) -> str:
    """Path of the random tiny 'strong' Llama (asset:tiny-strong), same tokenizer as tiny_weak."""
    from w2s.assets import ensure_asset

    return str(ensure_asset("tiny-strong", progress=lambda _msg: None))


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


@pytest.fixture(scope="session")
def tiny_reward_model(tiny_weak, tmp_path_factory) -> str:
    """A one-label sequence-classification reward model on the tiny Llama (random, seeded head), saved once."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-rm")
    model = AutoModelForSequenceClassification.from_pretrained(tiny_weak, num_labels=1, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_weak)
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
