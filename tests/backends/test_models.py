"""What the trainers check about a model before loading it: attention kernel, shipped code, context length; and
the shipped-code refusal at validation time, before anything starts."""

from __future__ import annotations

import json
import logging

import pytest

from w2s.backends import models
from w2s.errors import ConfigError, W2SError


@pytest.fixture
def coded_model(tmp_path):
    """A model directory whose config.json points at its own Python code (nothing here ever runs it)."""
    path = tmp_path / "coded-model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({
        "model_type": "llama", "max_position_embeddings": 4096,
        "auto_map": {"AutoConfig": "configuration_x.XConfig", "AutoModelForCausalLM": "modeling_x.XForCausalLM"}}))
    return path


def test_flash_attention_falls_back_to_sdpa_without_cuda_with_one_log_line(caplog):
    with caplog.at_level(logging.WARNING, logger="w2s.backends.models"):
        assert models.training_attn("flash_attention_2") == "sdpa"
    assert [r.getMessage() for r in caplog.records] == [
        "attn_implementation=flash_attention_2 needs CUDA and flash-attn; training with sdpa"]
    assert models.training_attn("eager") == "eager" and models.training_attn("sdpa") == "sdpa"


def test_shipped_code_is_refused_unless_trusted(coded_model, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 256}))
    assert models.ships_code(coded_model) and not models.ships_code(plain) and not models.ships_code(tmp_path)
    assert models.max_positions(coded_model) == 4096 and models.max_positions(tmp_path) is None
    with pytest.raises(W2SError, match=r"auto_map[\s\S]*set model.strong.trust_remote_code=true"):
        models.guard_remote_code(str(coded_model), False, key="model.strong.trust_remote_code")
    models.guard_remote_code(str(coded_model), True)  # the flag is honoured
    models.guard_remote_code(str(plain), False)  # no code, nothing to trust


def test_validation_refuses_an_untrusted_coded_model_before_anything_starts(coded_model):
    from w2s.config.compose import load_config

    with pytest.raises(ConfigError) as err:
        load_config("tiny/dpo", [f"model.strong.path={coded_model}"])
    (issue,) = [i for i in err.value.issues if i.key == "model.strong.trust_remote_code"]
    assert issue.value is False and str(coded_model) in issue.problem and "auto_map" in issue.problem
    assert issue.fix.startswith("set model.strong.trust_remote_code=true")
    load_config("tiny/dpo", [f"model.strong.path={coded_model}", "model.strong.trust_remote_code=true"])

    with pytest.raises(ConfigError, match="model.aligner.trust_remote_code"):
        load_config("tiny/aligner", [f"model.aligner.path={coded_model}"], job="aligner-train")
    # The reward model's own base is trained with the strong policy's settings.
    with pytest.raises(ConfigError, match=r"model.strong.trust_remote_code[\s\S]*train.rlhf.reward_model.base"):
        load_config("tiny/rlhf", [f"train.rlhf.reward_model.base={coded_model}"])


def test_validation_checks_ppos_sequence_budget():
    from w2s.config.compose import load_config

    gpu = "gpu/alpaca7b-aligner7b-rlhf"
    cfg = load_config(gpu)
    ppo = cfg.train.rlhf.ppo
    assert ppo.max_prompt_tokens + ppo.max_new_tokens <= cfg.train.rlhf.reward_model.max_len
    with pytest.raises(ConfigError, match=r"train.rlhf.ppo.max_prompt_tokens = 512: max_prompt_tokens \+ "
                                          r"max_new_tokens = 512 \+ 2048 = 2560 tokens exceeds the reward model's"):
        load_config(gpu, ["train.rlhf.ppo.max_new_tokens=2048"])
