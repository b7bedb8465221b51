"""w2s.generation.sampling: presets under explicit values."""

from __future__ import annotations

import pytest

from w2s.config.schema import CorrectConfig, SamplingConfig
from w2s.errors import ConfigError
from w2s.generation import resolve_sampling
from w2s.generation.sampling import engine_issues


def test_presets():
    p = resolve_sampling(SamplingConfig(preset="aligner-paper"))
    assert (p["top_k"], p["top_p"], p["temperature"], p["frequency_penalty"], p["repetition_penalty"]) == \
        (10, 0.95, 0.3, 1.2, 1.0)
    p = resolve_sampling(SamplingConfig(preset="upstream-paper"))
    assert (p["top_k"], p["top_p"], p["temperature"], p["frequency_penalty"], p["repetition_penalty"]) == \
        (10, 0.95, 0.5, 0.0, 1.1)
    assert resolve_sampling(SamplingConfig(preset="greedy"))["greedy"] is True
    neutral = resolve_sampling(SamplingConfig())
    assert (neutral["temperature"], neutral["top_p"], neutral["top_k"], neutral["greedy"]) == (1.0, 1.0, 0, False)


def test_explicit_values_win_and_passthrough():
    p = resolve_sampling(CorrectConfig(preset="aligner-paper", temperature=0.0, top_k=3, max_new_tokens=7, seed=5))
    assert p["temperature"] == 0.0 and p["greedy"] and p["top_k"] == 3 and p["frequency_penalty"] == 1.2
    assert p["max_new_tokens"] == 7 and p["seed"] == 5 and p["backend"] == "transformers"
    assert resolve_sampling({"preset": "greedy", "temperature": 0.7})["greedy"] is False


def test_bad_values():
    with pytest.raises(ConfigError, match="unknown decoding preset"):
        resolve_sampling({"preset": "creative"})
    with pytest.raises(ConfigError, match="top_p"):
        resolve_sampling({"top_p": 0.0})


def test_engine_issues_name_the_section():
    assert engine_issues("generate", SamplingConfig()) == []
    issues = engine_issues("generate", SamplingConfig(tensor_parallel_size=0, gpu_memory_utilization=1.5,
                                                      kv_cache_gib=-1.0))
    assert [i.key for i in issues] == ["generate.tensor_parallel_size", "generate.gpu_memory_utilization",
                                       "generate.kv_cache_gib"]
