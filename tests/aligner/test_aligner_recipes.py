"""The Aligner recipes: the tiny CPU one and the paper's GPU ones pass the config checks."""

from __future__ import annotations

import pytest

from w2s.config.compose import find_recipe, load_config, recipe_description


@pytest.mark.parametrize("name, base", [("aligner/aligner-2b", "google/gemma-2b"),
                                        ("aligner/aligner-7b", "meta-llama/Llama-2-7b-hf"),
                                        ("aligner/aligner-13b", "meta-llama/Llama-2-13b-hf")])
def test_gpu_recipes_follow_the_paper(name, base):
    cfg = load_config(name, job="aligner-train")
    load_config(name, job="correct")
    a = cfg.aligner.train
    assert cfg.model.aligner.path == base and recipe_description(find_recipe(name))
    assert (a.epochs, a.max_len, a.optim.lr, a.optim.scheduler, a.optim.warmup_ratio, list(a.optim.betas)) == \
        (3, 2048, 2e-5, "cosine", 0.03, [0.9, 0.95])
    assert a.zero_stage == 3 and a.global_batch_samples == 256 and a.warmup_fraction == 0.2
    assert cfg.correct.preset == "aligner-paper" and cfg.correct.backend == "vllm"
    assert cfg.cluster.trainer.num_gpus_per_actor == 1


def test_tiny_recipe():
    path = find_recipe("tiny/aligner")
    assert path.read_text().startswith("# ")
    cfg = load_config("tiny/aligner", job="aligner-train")
    assert cfg.model.aligner.path == "asset:tiny-weak" and cfg.aligner.train.warmup_fraction > 0
