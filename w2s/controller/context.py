"""What the work of every stage of a run needs: its config, its run directory and its role services."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from w2s.console import say
from w2s.generation import Generation
from w2s.rundir import RunDir, StageRecord

if TYPE_CHECKING:
    from w2s.data.prompts import Prompt
    from w2s.roles import Services


@dataclass
class RunContext:
    """The run a stage works for (the round loop is one; the Aligner's and evaluation's stages take it too)."""

    cfg: DictConfig
    rd: RunDir
    services: Services | None = None
    # Evaluation prompts the run also trains on, counted by preflight (w2s.controller.overlap): in every row of
    # metrics.jsonl that measures on them.
    eval_overlap: dict[str, int | None] = field(default_factory=dict)

    def generate(self, model_path: str, prompts: list[Prompt], sampling: Any, seed: int,
                 what: str, rec: StageRecord | None = None) -> list[Generation]:
        """Answers of ``model_path`` to ``prompts``; the engine that served them goes to ``rec``'s provenance."""
        t0 = time.time()
        outs, engine = self.services.generator.generate(model_path, [p.prompt for p in prompts], sampling, seed,
                                                        what=what)
        if rec is not None:
            rec.provenance["engine"] = engine
        tokens, secs = sum(o.completion_tokens for o in outs), time.time() - t0
        say(f"{what}: {len(outs)} answers, {tokens} tokens in {secs:.1f} s ({tokens / max(secs, 1e-9):.1f} tokens/s, "
            f"{engine['backend']})")
        return outs
