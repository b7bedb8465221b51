"""The trainer ranks: what every training call gets from the model section, and how a rank calls the backend."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from w2s.backends import openrlhf
from w2s.config.compose import load_config
from w2s.config.schema import SFTConfig
from w2s.workers.trainer import TrainerWorker, model_kwargs


def test_policy_trainers_get_the_strong_models_kernel_and_trust():
    cfg = load_config("gpu/alpaca7b-aligner7b-dpo", ["model.strong.trust_remote_code=true"])
    for function in ("train_sft", "train_dpo", "train_reward_model"):
        assert model_kwargs(cfg, function) == {"attn_implementation": "flash_attention_2",
                                               "trust_remote_code": True}, function
    assert model_kwargs(cfg, "train_aligner") == {}  # it reads model.aligner itself
    tiny = load_config("tiny/sft")
    assert model_kwargs(tiny, "train_sft") == {"attn_implementation": "sdpa", "trust_remote_code": False}


def test_a_rank_hands_the_keywords_to_the_backend(monkeypatch):
    seen = {}

    def fake_train_sft(cfg, model_path, data_path, output_dir, **kwargs):
        seen.update(cfg=cfg, args=(model_path, data_path, output_dir), kwargs=kwargs)
        return openrlhf.TrainResult(output_dir=output_dir, steps=1, samples=4, seconds=0.1, world_size=2,
                                    attn_implementation=kwargs["attn_implementation"])

    monkeypatch.setattr(openrlhf, "train_sft", fake_train_sft)
    result = TrainerWorker().run("train_sft", {"max_len": 64}, "/m", "/d.jsonl", "/out", seed=3,
                                 attn_implementation="eager", trust_remote_code=True)
    # The section arrives typed: what was sent, and the schema's defaults for the rest.
    cfg = seen.pop("cfg")
    assert OmegaConf.get_type(cfg) is SFTConfig and cfg.max_len == 64 and cfg.epochs == SFTConfig().epochs
    assert seen == {"args": ("/m", "/d.jsonl", "/out"),
                    "kwargs": {"seed": 3, "attn_implementation": "eager", "trust_remote_code": True}}
    assert result["world_size"] == 2 and result["attn_implementation"] == "eager"  # the TrainResult as a dict


def test_a_misspelt_field_of_a_training_section_fails_in_the_rank_with_its_name(monkeypatch):
    called = []
    monkeypatch.setattr(openrlhf, "train_dpo", lambda *a, **k: called.append(a))
    with pytest.raises(ConfigKeyError, match="betta"):
        TrainerWorker().run("train_dpo", {"betta": 0.2}, "/m", "/m", "/d.jsonl", "/out")
    assert called == []  # refused before the backend ran
