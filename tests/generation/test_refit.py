"""The refit check: an engine that took a checkpoint in place computes the trainer's log-probabilities of the
probe; a checkpoint whose values are not those the trainer measured (same tensors, same shapes) is caught with
both sets of numbers; a wake-up is checked against the engine's own answer before it slept."""

from __future__ import annotations

import shutil

import pytest
from omegaconf import OmegaConf

from w2s.config.schema import GenerateConfig, ModelConfig
from w2s.generation.hf import HFGenerator
from w2s.generation.refit import (
    PROBE_FILE,
    RefitError,
    WakeCheck,
    hf_token_logprobs,
    probe_ids,
    read_probe,
    verify,
    write_probe,
)


def perturbed_checkpoint(src: str, out, seed: int, *, probe: bool = True) -> str:
    """``src``'s architecture with other weights, saved with its probe as the trainer writes it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(out)
    tok = AutoTokenizer.from_pretrained(src)
    tok.save_pretrained(out)
    if probe:
        ids = probe_ids(tok)
        write_probe(out, ids, hf_token_logprobs(model.eval(), ids), "float32")
    return str(out)


@pytest.fixture(scope="module")
def engine(tiny_strong):
    cfg = OmegaConf.structured(GenerateConfig(max_new_tokens=4))
    return HFGenerator(tiny_strong, OmegaConf.structured(ModelConfig(dtype="float32")), cfg, device="cpu")


def test_the_check_passes_after_a_real_reload_and_fails_on_other_values(engine, tiny_strong, tmp_path):
    trained = perturbed_checkpoint(tiny_strong, tmp_path / "trained", seed=1)
    probe = read_probe(trained)
    assert len(probe["ids"]) > 10 and len(probe["logprobs"]) == len(probe["ids"]) - 1
    engine.load_weights(trained)
    done = verify(engine, trained, 0.1)
    assert done["checked"] and done["mean_abs_diff"] < 1e-4 and done["tokens"] == len(probe["logprobs"])
    # Another checkpoint's weights under this one's probe: the same tensors and shapes, other values.
    other = perturbed_checkpoint(tiny_strong, tmp_path / "other", seed=2, probe=False)
    wrong = tmp_path / "wrong"
    shutil.copytree(other, wrong)
    shutil.copy(f"{trained}/{PROBE_FILE}", wrong / PROBE_FILE)
    engine.load_weights(str(wrong))
    with pytest.raises(RefitError) as e:
        verify(engine, str(wrong), 0.1)
    message = str(e.value)
    assert f"refit check of {wrong}" in message and "tolerance 0.1" in message
    assert message.count("[") >= 2 and f"{probe['logprobs'][0]:.4f}" in message  # the trainer's numbers, shown
    # Not w2s's checkpoint (no probe) or the check off: said so, nothing compared.
    assert verify(engine, other, 0.1) == {"checked": False, "why": f"no {PROBE_FILE} in {other}"}
    assert verify(engine, trained, 0.0)["checked"] is False


def test_a_wake_up_is_checked_against_the_answer_before_sleeping(engine, tiny_strong, tmp_path):
    check = WakeCheck(engine, 0.1)
    check.before_sleep()
    engine.sleep()
    engine.wake_up()
    assert check.after_wake() == 0.0
    check.before_sleep()
    engine.load_weights(perturbed_checkpoint(tiny_strong, tmp_path / "changed", seed=3, probe=False))  # woke up wrong
    with pytest.raises(RefitError, match="after waking up"):
        check.after_wake()
