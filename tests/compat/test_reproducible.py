"""w2s.compat.reproducible: what OpenRLHF's PPO left to chance, drawn from train.seed. The engine below stands in
for OpenRLHF's rollout actor: it records the sampling parameters each request reaches vLLM with, since what is
checked is which seed each request carries, whatever order the requests arrive in; that vLLM's CPU build samples a
seeded request alike alone, batched or reordered is tested on a real engine in tests/generation/test_vllm_engine.py
(test_sampling_does_not_depend_on_batching_or_order)."""

from __future__ import annotations

import asyncio
import json
import random
from types import SimpleNamespace

import pytest
import torch


class RecordingEngine:
    """What OpenRLHF's executor calls on its engine (``generate``; ``kwargs`` as RolloutRayActor keeps them)."""

    def __init__(self, seed: int):
        self.kwargs = {"seed": seed}
        self.seeds: list[tuple[tuple[int, ...], int]] = []

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        await asyncio.sleep(random.random() / 100)  # requests finish in no fixed order
        self.seeds.append((tuple(prompt_token_ids), sampling_params.seed))
        out = SimpleNamespace(token_ids=[1, 2], finish_reason="length", logprobs=None)
        return SimpleNamespace(outputs=[out])


@pytest.fixture(scope="module")
def patched():
    from w2s.compat import ppo

    ppo.apply_in_worker()


def _rollouts(tokenizer, engine_seed: int, requests: list[tuple[str, int]], shuffle: int) -> dict[str, list[int]]:
    """Send ``requests`` (prompt, samples) to a fresh executor, concurrently and in a shuffled order, as rollout
    calls reach an engine; the seeds each prompt's samples were drawn with."""
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from vllm import SamplingParams

    executor, engine = SingleTurnAgentExecutor(), RecordingEngine(engine_seed)
    params = SamplingParams(temperature=1.0, max_tokens=2)
    order = list(requests)
    random.Random(shuffle).shuffle(order)

    async def send(prompt: str, samples: int):
        return await asyncio.gather(*[executor.execute(prompt=prompt, label=None, sampling_params=params,
                                                       max_length=64, hf_tokenizer=tokenizer, llm_engine=engine)
                                      for _ in range(samples)])

    async def all_of_them():
        return await asyncio.gather(*[send(p, n) for p, n in order])

    asyncio.run(all_of_them())
    assert params.seed is None  # the caller's parameters are left as they were
    by_prompt: dict[str, list[int]] = {}
    for ids, seed in engine.seeds:
        by_prompt.setdefault(tokenizer.decode(list(ids)), []).append(seed)
    return {p: sorted(s) for p, s in by_prompt.items()}


def test_each_rollout_draws_from_a_seed_of_its_own_whatever_order_requests_arrive_in(patched, tiny_strong):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_strong)
    requests = [("How do I stay safe?", 3), ("What is a star?", 2)]
    first = _rollouts(tokenizer, 44, requests, shuffle=0)
    assert sorted(len(s) for s in first.values()) == [2, 3]
    seeds = [s for per_prompt in first.values() for s in per_prompt]
    assert all(s is not None for s in seeds) and len(set(seeds)) == 5  # one per sample: samples differ
    assert _rollouts(tokenizer, 44, requests, shuffle=1) == first  # another arrival order, the same seeds
    assert _rollouts(tokenizer, 45, requests, shuffle=0) != first  # another engine seed, others


def test_rollouts_are_kept_in_the_order_their_prompts_were_sent(patched):
    from openrlhf.trainer.ppo_utils import Experience

    from w2s.compat.reproducible import in_dispatch_order

    def rollout(prompt: str, tokens: list[int]) -> Experience:
        return Experience(sequences=torch.tensor([tokens]), prompts=[prompt])

    finished = [rollout("b", [5, 1]), rollout("a", [3]), rollout("b", [4, 9]), rollout("c", [1])]
    ordered = in_dispatch_order(finished, {"a": 0, "b": 1})
    assert [(e.prompts[0], e.sequences.tolist()) for e in ordered] == [
        ("a", [[3]]), ("b", [[4, 9]]), ("b", [[5, 1]]), ("c", [[1]])]  # equal prompts by tokens; unsent last
    assert in_dispatch_order(list(reversed(finished)), {"a": 0, "b": 1}) == ordered


def test_the_patches_are_installed_where_openrlhf_looks_them_up(patched):
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
    from openrlhf.utils import agent

    assert agent.SingleTurnAgentExecutor.execute._w2s and agent.MultiTurnAgentExecutor.execute._w2s
    assert SamplesGenerator._generate_vllm._w2s


def test_the_prompts_order_follows_train_seed_not_the_processs_random_state(patched, tiny_strong, tmp_path,
                                                                          monkeypatch):
    """OpenRLHF's PPO trainer (a Ray actor nothing seeds) shuffled its prompts from the process's global RNG: two
    runs of one config trained on other prompts from their first step. With the patch, OpenRLHF's own
    prepare_datasets gives one order per train.seed, whatever the process's RNG holds."""
    from types import SimpleNamespace

    import torch.distributed
    from openrlhf.trainer import ppo_trainer
    from openrlhf.utils.deepspeed import DeepspeedStrategy
    from transformers import AutoTokenizer

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)  # as in the trainer actor: no world
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(16)))
    tokenizer = AutoTokenizer.from_pretrained(tiny_strong)

    def order(seed: int, rng_state: int) -> list[str]:
        args = SimpleNamespace(
            data=SimpleNamespace(prompt_dataset=str(data), prompt_probs=None, max_samples=100, prompt_split="train",
                                 input_template=None, dataloader_num_workers=0, input_key="prompt", label_key=None,
                                 apply_chat_template=False),
            train=SimpleNamespace(seed=seed, batch_size=4, num_episodes=1, max_epochs=1),
            rollout=SimpleNamespace(n_samples_per_prompt=1), eval=SimpleNamespace(dataset=None),
            ds=SimpleNamespace(param_dtype="fp32"))
        strategy = DeepspeedStrategy(seed=seed, args=args)
        torch.manual_seed(rng_state)  # what the process happened to hold
        loader, _, _ = ppo_trainer.prepare_datasets(strategy, tokenizer)
        return [batch[1][0] for batch in loader]  # (datasources, prompts, labels, images): each batch one prompt

    first = order(seed=44, rng_state=1)
    assert sorted(first) == sorted(f"question {i}" for i in range(16))
    assert order(seed=44, rng_state=2) == first
    assert order(seed=45, rng_state=1) != first
