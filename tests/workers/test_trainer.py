"""The trainer ranks: what every training request gets from the model section, and how a rank calls the backend."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from w2s.backends import openrlhf
from w2s.config.compose import load_config
from w2s.roles.trainer import as_sent
from w2s.workers.requests import TrainAligner, TrainDPO, TrainRewardModel, TrainSFT
from w2s.workers.trainer import TrainerWorker

PATHS = {"data": "/d.jsonl", "output": "/out"}


def test_policy_trainings_get_the_strong_models_kernel_and_trust():
    cfg = load_config("gpu/alpaca7b-aligner7b-dpo", ["model.strong.trust_remote_code=true"])
    for request in (TrainSFT(section=cfg.train.sft, policy="/m", **PATHS),
                    TrainDPO(section=cfg.train.dpo, policy="/m", reference="/r", **PATHS),
                    TrainRewardModel(section=cfg.train.rlhf.reward_model, base="/m", **PATHS)):
        sent = as_sent(request, cfg)
        assert (sent.attn_implementation, sent.trust_remote_code) == ("flash_attention_2", True), request
        assert isinstance(sent.section, dict) and sent.section["max_len"] == request.section.max_len
    aligner = as_sent(TrainAligner(section=cfg, output="/out"), cfg)  # it reads model.aligner itself
    assert (aligner.attn_implementation, aligner.trust_remote_code) == ("sdpa", False)
    tiny = load_config("tiny/sft")
    sent = as_sent(TrainSFT(section=tiny.train.sft, policy="/m", **PATHS), tiny)
    assert (sent.attn_implementation, sent.trust_remote_code) == ("sdpa", False)


def test_a_training_request_takes_keywords_only():
    """A DPO's policy and reference cannot be given by position (swapped, they would train silently)."""
    with pytest.raises(TypeError):
        TrainDPO({}, "/policy", "/reference", "/d.jsonl", "/out")


def test_a_rank_hands_the_request_to_the_backend_by_name(monkeypatch):
    seen = {}

    def fake_train_dpo(cfg, model_path, ref_path, data_path, output_dir, **kwargs):
        seen.update(cfg=cfg, args=(model_path, ref_path, data_path, output_dir), kwargs=kwargs)
        return openrlhf.TrainResult(output_dir=output_dir, steps=1, samples=4, seconds=0.1, world_size=2,
                                    attn_implementation=kwargs["attn_implementation"])

    monkeypatch.setattr(openrlhf, "train_dpo", fake_train_dpo)
    result = TrainerWorker().train(TrainDPO(section={"max_len": 64}, reference="/ref", policy="/policy", seed=3,
                                            attn_implementation="eager", trust_remote_code=True, chat=False, **PATHS))
    # The section arrives typed: what was sent, and the schema's defaults for the rest.
    cfg = seen.pop("cfg")
    assert OmegaConf.get_type(cfg).__name__ == "DPOConfig" and cfg.max_len == 64
    assert seen == {"args": ("/policy", "/ref", "/d.jsonl", "/out"),
                    "kwargs": {"seed": 3, "chat": False, "tensorboard_dir": None, "attn_implementation": "eager",
                               "trust_remote_code": True}}
    assert result["world_size"] == 2 and result["attn_implementation"] == "eager"  # the TrainResult as a dict


def test_a_misspelt_field_of_a_training_section_fails_in_the_rank_with_its_name(monkeypatch):
    called = []
    monkeypatch.setattr(openrlhf, "train_sft", lambda *a, **k: called.append(a))
    with pytest.raises(ConfigKeyError, match="epoch"):
        TrainerWorker().train(TrainSFT(section={"epoch": 2}, policy="/m", **PATHS))
    assert called == []  # refused before the backend ran
