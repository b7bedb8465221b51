"""w2s.generation.vllm_engine: what runs without vLLM: parameter mapping and the missing-package error."""

from __future__ import annotations

import importlib.util

import pytest

from w2s.config.schema import ModelConfig, SamplingConfig
from w2s.errors import W2SError
from w2s.generation import make_generator, resolve_sampling
from w2s.generation.vllm_engine import sampling_params_kwargs


def test_paper_preset_maps_to_vllm_sampling_params():
    kw = sampling_params_kwargs(resolve_sampling(SamplingConfig(preset="aligner-paper", max_new_tokens=2048,
                                                                max_prompt_tokens=1024)), seed=7)
    assert kw == {"n": 1, "max_tokens": 2048, "temperature": 0.3, "top_p": 0.95, "top_k": 10,
                  "frequency_penalty": 1.2, "repetition_penalty": 1.0, "seed": 7, "truncate_prompt_tokens": 1024}


def test_greedy_and_off_values_map_to_vllm_conventions():
    kw = sampling_params_kwargs(resolve_sampling(SamplingConfig(preset="greedy", max_prompt_tokens=0)), seed=0)
    assert kw["temperature"] == 0.0 and kw["top_k"] == -1 and kw["top_p"] == 1.0
    assert "truncate_prompt_tokens" not in kw


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_missing_vllm_names_the_fix(tiny_weak):
    with pytest.raises(W2SError, match=r"needs the `vllm` package.*pip install -e \.\[gpu\].*backend=transformers"):
        make_generator(tiny_weak, ModelConfig(), SamplingConfig(backend="vllm"))


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm")
def test_vllm_generates_on_gpu(tiny_weak):
    gen = make_generator(tiny_weak, ModelConfig(dtype="float16"),
                         SamplingConfig(backend="vllm", gpu_memory_utilization=0.3, max_prompt_tokens=64))
    try:
        out = gen.generate(["Hi", "Paris is"], SamplingConfig(preset="greedy", max_new_tokens=8,
                                                              max_prompt_tokens=64), seed=0)
        assert len(out) == 2 and all(o.completion_tokens >= 1 and o.prompt_tokens >= 1 for o in out)
    finally:
        gen.close()
