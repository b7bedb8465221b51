"""``w2s bench generate``: start-up, tokens/s, prompts/s and peak memory of the generation backends side by side."""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any

from w2s.bench.services import PROMPTS, bench_services


def bench_generate(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Each backend of ``--backend`` in the generator actor a round would start (the recipe's placement, engine
    settings and tensor parallelism), one after the other on the same prompts: start-up (actor and engine) once,
    then each batch size; peak memory is the actor's, its engine's processes included.

    vLLM schedules its own batches, so it is measured once with every prompt submitted together (``batch``
    says ``all``); the transformers backend is measured at each ``--batch`` size.
    """
    from omegaconf import OmegaConf

    from w2s.roles import Services

    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.prompts)]
    rows = []
    with contextlib.ExitStack() as stack:
        cfg, _ = bench_services(args, stack, [f"model.strong.path={args.model}",
                                               f"model.strong.dtype={args.dtype or 'bfloat16'}"])
        for backend in args.backend:
            sampling = OmegaConf.merge(cfg.generate, {"backend": backend, "max_new_tokens": args.max_new_tokens,
                                                      "temperature": 0.0})
            measured = []
            with Services(cfg) as services:  # closed after each backend: the next one's memory is its own
                t0 = time.perf_counter()
                services.generator.hold(args.model, cfg.model.strong, sampling)
                startup = time.perf_counter() - t0
                for batch in list(args.batch) if backend == "transformers" else ["all"]:
                    size = len(prompts) if batch == "all" else int(batch)
                    sampling = OmegaConf.merge(sampling, {"batch_prompts_per_actor": size})
                    # warm-up: first-call allocations, compiled kernels
                    services.generator.generate(args.model, prompts[:size], sampling, 0,
                                                what=f"bench {backend} warm-up")
                    t1 = time.perf_counter()
                    outs, _ = services.generator.generate(args.model, prompts, sampling, 0, what=f"bench {backend}")
                    secs = time.perf_counter() - t1
                    tokens = sum(o.completion_tokens for o in outs)
                    measured.append({"backend": backend, "batch": batch, "prompts": len(prompts),
                                     "new_tokens": tokens, "startup_s": round(startup, 1), "seconds": round(secs, 2),
                                     "tokens_per_s": round(tokens / secs, 1),
                                     "prompts_per_s": round(len(prompts) / secs, 2)})
                peak = round(services.peak_memory_mb("generator"))
            rows += [{**r, "peak_mem_mb": peak} for r in measured]
    return rows
