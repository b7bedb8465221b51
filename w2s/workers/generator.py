"""Generation actors: the strong policy answering prompts (and evaluation prompts)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from w2s.cluster import RoleActorMixin
from w2s.generation import Generation


class GeneratorWorker(RoleActorMixin):
    """Holds one policy in memory and answers chat prompts with it."""

    def __init__(self, model_path: str, model_cfg: dict[str, Any], sampling_cfg: dict[str, Any]):
        from w2s.generation import make_generator

        self.sampling = OmegaConf.create(sampling_cfg)
        self.generator = make_generator(model_path, OmegaConf.create(model_cfg), self.sampling)

    def generate(self, prompts: list[str], seed: int) -> list[Generation]:
        """Answer user prompts (the chat template is applied here): text and token counts per prompt."""
        from w2s.generation import render_chat

        rendered = [render_chat(self.generator.tokenizer, p) for p in prompts]
        return self.generator.generate(rendered, self.sampling, seed=seed)

    def close(self) -> None:
        self.generator.close()
