"""What every ``w2s bench`` measurement runs on: the recipe's role services on a private Ray, and a few prompts."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path
from typing import Any

PROMPTS = ["What is the capital of France?", "How can I sleep better?", "Explain photosynthesis briefly.",
           "Give me three tips for a job interview.", "Why is the sky blue?", "How do I apologise to a friend?",
           "What is 17 times 23?", "Write a haiku about rain."]


def bench_services(args: argparse.Namespace, stack: contextlib.ExitStack, overrides: list[str]
                    ) -> tuple[Any, Path]:
    """The recipe's config with ``overrides`` (the model under test), and a private Ray for the role services
    (not counted in any number: a run starts it once). Actor logs go to the output folder's logs/."""
    from w2s.aligner.cli import compose
    from w2s.cluster import RayCluster

    cfg = compose(args.recipe, [*args.overrides, *overrides], job="loop")
    out = Path(args.output or tempfile.mkdtemp(prefix=f"w2s-bench-{args.what}-"))
    out.mkdir(parents=True, exist_ok=True)
    stack.enter_context(RayCluster(cfg.cluster, actor_logs=str(out / "logs"), log_level=str(cfg.log.level)))
    return cfg, out
