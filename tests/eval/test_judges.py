"""The offline judges: real all-MiniLM-L6-v2 shipped in a PyPI package (no hub), a reward model on the tiny Llama,
and where each runs (the GPU its role reserves when CUDA is there, else the CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from w2s.eval import judges
from w2s.eval.judges import EmbeddingJudge, RewardModelJudge


def test_embedding_judge_prefers_the_answer_that_matches_the_reference():
    judge = EmbeddingJudge()
    assert judge.device == "cpu" and judge.model.device.type == "cpu"
    ref = "Paris is the capital of France."
    right, wrong, unrelated = judge.score(["q"] * 3, ["The capital of France is Paris.",
                                                      "Berlin is the capital of France.", "I like turtles."], [ref] * 3)
    assert right > wrong > unrelated
    assert right > 0.9


def test_device_is_cuda_when_this_process_has_a_gpu(monkeypatch):
    assert judges.pick_device() == "cpu"  # this machine has no CUDA
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a judge actor that Ray gave a GPU
    assert judges.pick_device() == "cuda"
    assert judges.pick_device("cpu") == "cpu"  # an explicit device wins


def test_reward_model_judge_runs_where_it_chose(tiny_weak, monkeypatch):
    from w2s.workers.judge import JudgeWorker

    worker = JudgeWorker({"kind": "reward-model", "model": tiny_weak, "batch_size": 2})
    assert worker.device() == "cpu" and worker.judge.model.device.type == "cpu"
    scores = worker.score([("What is 1 plus 1?", "It is 2.", ""), ("Hi?", "Hello.", ""), ("Q?", "A.", "")])
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    # With CUDA reported available it puts the model on the GPU (which this CPU build of torch cannot do).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        RewardModelJudge(tiny_weak)
