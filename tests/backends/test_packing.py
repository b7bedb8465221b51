"""Sample packing (``packing_samples``): the check that a model keeps packed rows apart, on the tiny Llama."""

from __future__ import annotations

import pytest

from w2s.backends import packing
from w2s.errors import ConfigError


@pytest.fixture(scope="module")
def models(tiny_weak):
    """The tiny Llama as OpenRLHF's Actor (SFT, DPO) and as a reward model, set to pack, in float32."""
    from w2s.compat import cpu

    cpu.apply()  # before OpenRLHF's models are imported, as the backend does
    from openrlhf.models import Actor, get_llm_for_sequence_regression

    actor = Actor(tiny_weak, attn_implementation="sdpa", param_dtype="fp32", packing_samples=True)
    reward = get_llm_for_sequence_regression(tiny_weak, "reward", init_value_head=True, param_dtype="fp32",
                                             attn_implementation="eager", packing_samples=True)
    return {"sft": (actor, actor), "rm": (reward, reward)}


@pytest.mark.parametrize("kind", ["sft", "rm"])
def test_a_model_on_transformers_masks_keeps_packed_rows_apart(kind, models):
    model, switch = models[kind]
    model.train()
    difference = packing.check_packing(kind, model, switch, 512, param_dtype="fp32", attn_implementation="sdpa")
    assert difference < 1e-5
    assert switch.packing_samples and model.training  # left as it was found


@pytest.mark.parametrize("kind", ["sft", "rm"])
def test_a_model_whose_attention_reads_across_packed_rows_is_refused(kind, models, monkeypatch):
    """What a model not built on transformers' mask helpers does: the packed rows' boundaries are not seen (here
    transformers' detection of them is switched off), so a row attends to the row before it."""
    import transformers.masking_utils

    monkeypatch.setattr(transformers.masking_utils, "find_packed_sequence_indices", lambda position_ids: None)
    model, switch = models[kind]
    with pytest.raises(ConfigError) as err:
        packing.check_packing(kind, model, switch, 512, param_dtype="fp32", attn_implementation="eager")
    issue = err.value.issues[0]
    assert issue.key == "packing_samples" and "does not keep packed rows apart" in issue.problem
    assert "eager" in issue.problem and "set packing_samples to false" in issue.fix
    assert switch.packing_samples  # restored after the padded pass
