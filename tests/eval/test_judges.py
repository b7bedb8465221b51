"""The offline judges: real all-MiniLM-L6-v2 shipped in a PyPI package (no hub), a reward model on the tiny Llama,
and where each runs (the GPU its role reserves when CUDA is there, else the CPU)."""

from __future__ import annotations

import pytest
import torch

from w2s.eval import judges
from w2s.eval.judges import EmbeddingJudge


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


def test_sequence_classification_reward_model_scores_as_the_model_does(tiny_reward_model, monkeypatch):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from w2s.eval.score_models import ClassifierJudge, detect_format
    from w2s.workers.judge import JudgeWorker
    from w2s.workers.requests import Score

    path = tiny_reward_model
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    assert detect_format(path) == "sequence-classification"
    worker = JudgeWorker({"kind": "reward-model", "model": path, "batch_size": 2})
    assert worker.device() == "cpu" and worker.judge.model.device.type == "cpu"
    rows = [("What is 1 plus 1?", "It is 2, as anyone can check.", ""), ("Hi?", "Hello.", ""), ("Q?", "A.", "")]
    scores = worker.score(Score(triples=rows))
    for (p, a, _), s in zip(rows, scores):  # one at a time, unpadded: the batch's padding changes nothing
        text = tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                                       tokenize=False)
        with torch.no_grad():
            expected = model(**tok(text, return_tensors="pt")).logits[0, 0].item()
        assert s == pytest.approx(expected, rel=1e-4, abs=1e-5)
    # With CUDA reported available it puts the model on the GPU (which this CPU build of torch cannot do).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises((AssertionError, RuntimeError), match="CUDA"):
        ClassifierJudge(path)


def test_a_cost_model_wins_when_its_cost_is_lower():
    from w2s.eval.panel import score_outcome

    assert score_outcome(0.5, 0.1, margin=0.01, lower_is_better=False) == "win"
    assert score_outcome(0.5, 0.1, margin=0.01, lower_is_better=True) == "loss"   # more cost: more harmful
    assert score_outcome(-2.0, 1.0, margin=0.01, lower_is_better=True) == "win"
    assert score_outcome(0.105, 0.1, margin=0.01, lower_is_better=True) == "tie"


def test_a_local_pairwise_judge_is_checked_after_every_wake_up(tiny_weak, tmp_path):
    """Colocated judges take turns as the generator does: after waking, the chat judge's engine answers the probe as
    it did before sleeping; an engine that woke up with other weights is stopped, naming both answers."""
    from tests.generation.test_refit import perturbed_checkpoint
    from w2s.generation.refit import RefitError
    from w2s.workers.judge import JudgeWorker

    worker = JudgeWorker({"kind": "pairwise", "backend": "local", "model": tiny_weak, "dtype": "float32"})
    worker.sleep()
    assert worker.wake_up() == {"checked": True, "mean_abs_diff": 0.0}
    worker.sleep()
    worker.chat.generator.load_weights(perturbed_checkpoint(tiny_weak, tmp_path / "other", seed=3, probe=False))
    with pytest.raises(RefitError, match="after waking up"):
        worker.wake_up()
    worker.close()
