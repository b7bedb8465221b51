"""One PPO config, one run: what OpenRLHF's PPO (0.11.2) leaves to chance, drawn from ``train.seed`` instead.

Measured on ``tiny/rlhf`` (two runs of one config on CPU): the first rollout's prompts differed, and with the same
prompts the rollouts' samples still differed. Three sources, each fixed here in the process that holds it:

1. **The prompts' order.** The PPO trainer, a Ray actor of its own that nothing seeds, shuffles its prompts with a
   sampler seeded from the process's global random state. :func:`seed_prompt_order` seeds that sampler from
   ``train.seed``; its generator is part of the loader's resumable state, so a resumed PPO goes on in that order.
2. **Each rollout's sample.** Every prompt is a request of its own to an asynchronous engine, so which requests
   share a batch, and so which random numbers each draws, depends on when they arrive.
   :func:`seed_each_rollout` gives every request a seed of its own (vLLM then samples it from its own generator,
   whatever it is batched with), from the engine's seed, the prompt and how often this engine was sent it before.
3. **The rollouts' order.** The trainer collects them as they finish, and that order feeds the replay buffer's
   shuffle. :func:`keep_dispatch_order` sorts each batch by the order its prompts were sent (equal prompts by their
   tokens).

Not covered: numerics that depend on the batch shape (a matrix product of other sizes can round differently and,
rarely, flip a sampled token), and on GPUs kernels that are not deterministic (OpenRLHF's
``--train.full_determinism_enable`` asks for deterministic ones).
"""

from __future__ import annotations

import copy
import functools
import hashlib
from collections import Counter
from typing import Any


def apply() -> None:
    """Patch this process (the PPO trainer's, an engine's, a model rank's: each patch acts only where its code runs);
    idempotent."""
    seed_prompt_order()
    seed_each_rollout()
    keep_dispatch_order()


def seed_prompt_order() -> None:
    from openrlhf.trainer import ppo_trainer, ppo_trainer_async

    original = ppo_trainer.prepare_datasets
    if getattr(original, "_w2s", False):
        return

    @functools.wraps(original)
    def prepare_datasets(strategy: Any, tokenizer: Any) -> Any:
        prompts, evals, max_steps = original(strategy, tokenizer)
        generator = getattr(getattr(prompts, "sampler", None), "generator", None)
        if generator is not None:  # None: a distributed sampler, which seeds itself from train.seed
            generator.manual_seed(int(strategy.args.train.seed))
        return prompts, evals, max_steps

    prepare_datasets._w2s = True  # type: ignore[attr-defined]
    for module in (ppo_trainer, ppo_trainer_async):  # each bound the name at import
        module.prepare_datasets = prepare_datasets


def rollout_seed(engine_seed: int, prompt: str, occurrence: int) -> int:
    """A 63-bit seed for the ``occurrence``-th request of ``prompt`` to an engine started with ``engine_seed``."""
    digest = hashlib.sha256(f"w2s-rollout:{int(engine_seed)}:{occurrence}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def seed_each_rollout() -> None:
    from openrlhf.utils import agent

    for cls in (agent.SingleTurnAgentExecutor, agent.MultiTurnAgentExecutor):
        original = cls.__dict__["execute"]
        if getattr(original, "_w2s", False):
            continue

        def seeded(original: Any) -> Any:
            @functools.wraps(original)
            async def execute(self: Any, prompt: Any, label: Any, sampling_params: Any, *args: Any,
                              **kwargs: Any) -> Any:
                llm_engine = kwargs.get("llm_engine", args[2] if len(args) > 2 else None)
                engine_seed = getattr(llm_engine, "kwargs", {}).get("seed")
                if sampling_params.seed is None and engine_seed is not None:
                    # The engine runs one event loop: counting here, before the first await, follows the order in
                    # which requests reached it (a prompt's samples in order; equal prompts sent at once may swap
                    # seeds, and keep_dispatch_order then orders them by their tokens).
                    seen = self.__dict__.setdefault("_w2s_seen", Counter())
                    key = str(prompt)
                    sampling_params = copy.copy(sampling_params)
                    sampling_params.seed = rollout_seed(int(engine_seed), key, seen[key])
                    seen[key] += 1
                return await original(self, prompt, label, sampling_params, *args, **kwargs)

            execute._w2s = True  # type: ignore[attr-defined]
            return execute

        cls.execute = seeded(original)


def keep_dispatch_order() -> None:
    from openrlhf.trainer.ppo_utils import samples_generator

    cls = samples_generator.SamplesGenerator
    dispatch, generate = cls._dispatch_prompts_to_vllm, cls._generate_vllm
    if getattr(generate, "_w2s", False):
        return

    @functools.wraps(dispatch)
    def _dispatch_prompts_to_vllm(self: Any, prompts: list, *args: Any, **kwargs: Any) -> Any:
        sent = self.__dict__.setdefault("_w2s_sent", {})
        for prompt in prompts:
            sent.setdefault(str(prompt), len(sent))
        return dispatch(self, prompts, *args, **kwargs)

    @functools.wraps(generate)
    def _generate_vllm(self: Any, *args: Any, **kwargs: Any) -> Any:
        self._w2s_sent = {}
        experiences, consumed, exhausted = generate(self, *args, **kwargs)
        return in_dispatch_order(experiences, self._w2s_sent), consumed, exhausted

    _generate_vllm._w2s = True  # type: ignore[attr-defined]
    cls._dispatch_prompts_to_vllm, cls._generate_vllm = _dispatch_prompts_to_vllm, _generate_vllm


def in_dispatch_order(experiences: list, sent: dict[str, int]) -> list:
    """``experiences`` (one rollout each) by when their prompt was first sent (``sent``: prompt -> index), equal
    prompts' rollouts by their tokens; a prompt not sent goes last."""
    return sorted(experiences, key=lambda e: (sent.get(str(e.prompts[0]), len(sent)), e.sequences.flatten().tolist()))
