"""w2s.config.validate: cross-field rules, each shown to reject what it must and accept what it may."""

from __future__ import annotations

import pytest

from w2s.config.compose import load_config
from w2s.errors import ConfigError


def _issues(*overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        load_config("tiny/dpo", list(overrides))
    return {i.key: f"{i.problem} | {i.fix}" for i in e.value.issues}


def test_vllm_runs_on_cpu_actors_and_on_whole_or_shared_gpus():
    load_config("tiny/dpo", ["generate.backend=vllm", "correct.backend=vllm", "eval.generate.backend=vllm"])
    load_config("tiny/dpo", ["generate.backend=vllm", "cluster.num_gpus=1", "cluster.generator.num_gpus_per_actor=0.5"])
    load_config("tiny/dpo", ["generate.backend=vllm", "generate.tensor_parallel_size=2", "cluster.num_gpus=2",
                             "cluster.generator.num_gpus_per_actor=2"])


def test_a_tensor_parallel_engine_needs_one_gpu_per_rank_in_its_actor():
    issues = _issues("generate.backend=vllm", "generate.tensor_parallel_size=4", "cluster.num_gpus=8",
                     "cluster.generator.num_gpus_per_actor=2")
    assert "cluster.generator.num_gpus_per_actor=2" in issues["generate.tensor_parallel_size"]
    assert "set cluster.generator.num_gpus_per_actor=4" in issues["generate.tensor_parallel_size"]
    issues = _issues("correct.backend=vllm", "correct.tensor_parallel_size=0")
    assert "must be at least 1" in issues["correct.tensor_parallel_size"]
