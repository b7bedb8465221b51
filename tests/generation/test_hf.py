"""w2s.generation.hf: batched left-padded generation, frequency penalty, truncation, EOS, determinism."""

from __future__ import annotations

import pytest
import torch

from w2s.config.schema import ModelConfig, SamplingConfig
from w2s.generation import make_generator
from w2s.generation.hf import FrequencyPenaltyLogitsProcessor, build_logits_processors
from w2s.generation.sampling import resolve_sampling

PROMPTS = ["What is 3 plus 4? It is", "Hi", "The weak aligner corrects the answer of the strong model so that",
           "Paris is", "I cannot help with that request, but"]


@pytest.fixture(scope="module")
def gen(tiny_weak):
    g = make_generator(tiny_weak, ModelConfig(dtype="float32"), SamplingConfig(batch_prompts_per_actor=4))
    yield g
    g.close()


def test_batched_left_padded_equals_one_at_a_time_greedy(gen):
    cfg = SamplingConfig(preset="greedy", max_new_tokens=12, batch_prompts_per_actor=5)
    batched = gen.generate(PROMPTS, cfg, seed=0)
    single = [gen.generate([p], cfg, seed=0)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.prompt_tokens for g in batched] == [len(gen.encode(p, 0)) for p in PROMPTS]
    assert all(g.completion_tokens == 12 and g.finish_reason == "length" for g in batched)
    assert len({g.text for g in batched}) > 1  # the prompts really differ


def test_sampling_is_deterministic_given_seed(gen):
    cfg = SamplingConfig(preset="aligner-paper", temperature=1.0, max_new_tokens=16)
    a = [g.text for g in gen.generate(PROMPTS, cfg, seed=3)]
    assert a == [g.text for g in gen.generate(PROMPTS, cfg, seed=3)]
    assert a != [g.text for g in gen.generate(PROMPTS, cfg, seed=4)]


def test_frequency_penalty_subtracts_penalty_times_completion_count():
    proc = FrequencyPenaltyLogitsProcessor(1.5, prompt_length=3)
    ids = torch.tensor([[7, 7, 7, 1, 2, 1], [0, 0, 5, 5, 5, 4]])  # first 3 columns: prompt (not counted)
    scores = torch.zeros(2, 10)
    out = proc(ids, scores)
    expected = torch.zeros(2, 10)
    expected[0, 1], expected[0, 2] = -3.0, -1.5
    expected[1, 5], expected[1, 4] = -3.0, -1.5
    assert torch.equal(out, expected)
    assert torch.equal(proc(ids[:, :3], scores), scores)  # nothing generated yet


def test_processor_order_follows_vllm():
    params = resolve_sampling(SamplingConfig(preset="aligner-paper", repetition_penalty=1.1))
    names = [type(p).__name__ for p in build_logits_processors(params, 4)]
    assert names == ["RepetitionPenaltyLogitsProcessor", "FrequencyPenaltyLogitsProcessor",
                     "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]
    greedy = resolve_sampling(SamplingConfig(preset="greedy", frequency_penalty=1.0))
    assert [type(p).__name__ for p in build_logits_processors(greedy, 4)] == ["FrequencyPenaltyLogitsProcessor"]


def test_frequency_penalty_changes_greedy_output(gen):
    plain = gen.generate(PROMPTS, SamplingConfig(preset="greedy", max_new_tokens=24), seed=0)
    penalised = gen.generate(PROMPTS, SamplingConfig(preset="greedy", max_new_tokens=24, frequency_penalty=50.0),
                             seed=0)
    assert [g.text for g in plain] != [g.text for g in penalised]
    # A zero penalty is exactly no penalty.
    zero = gen.generate(PROMPTS, SamplingConfig(preset="greedy", max_new_tokens=24, frequency_penalty=0.0), seed=0)
    assert [g.text for g in zero] == [g.text for g in plain]


def test_left_truncation_and_stop_at_eos(gen, tiny_weak):
    ids = gen.encode(PROMPTS[2], 4)
    assert ids == gen.encode(PROMPTS[2], 0)[-4:]
    cfg = SamplingConfig(preset="greedy", max_new_tokens=8, max_prompt_tokens=4)
    long, short = gen.generate([PROMPTS[2], "Hi"], cfg, seed=0)
    assert (long.prompt_tokens, long.prompt_truncated, short.prompt_truncated) == (4, True, False)
    assert gen.truncated_prompts == 1
    gen.generate(["Hi"], cfg, seed=0)
    assert gen.truncated_prompts == 0  # counts the last call only
    # Make the first greedy token an EOS token: generation must stop right there.
    first = gen.generate(["Hi"], SamplingConfig(preset="greedy", max_new_tokens=1), seed=0)[0]
    first_id = gen.tokenizer(first.text, add_special_tokens=False)["input_ids"][0]
    saved = gen.eos_token_ids
    gen.eos_token_ids = saved + [first_id]
    try:
        out = gen.generate(["Hi"], SamplingConfig(preset="greedy", max_new_tokens=8), seed=0)[0]
    finally:
        gen.eos_token_ids = saved
    assert out.finish_reason == "stop" and out.completion_tokens == 1 and out.text == ""
