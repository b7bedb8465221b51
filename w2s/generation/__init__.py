"""Text generation behind one interface: transformers (CPU or GPU) and vLLM (GPU).

Prompts given to :meth:`Generator.generate` are already rendered text: no chat template is applied inside
(use :func:`render_chat` first where wanted).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from w2s.generation.chat import render_chat
from w2s.generation.sampling import SAMPLING_PRESETS, resolve_sampling


@dataclass
class Generation:
    """One completion: its text, token counts and why it stopped (``stop`` at EOS, ``length`` at the limit)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class Generator(Protocol):
    """A loaded model that completes rendered prompts."""

    tokenizer: Any

    def generate(self, prompts: list[str], sampling_cfg: Any, *, seed: int,
                 progress: bool = False) -> list[Generation]: ...

    def close(self) -> None: ...


def make_generator(model_path: str, model_cfg: Any, sampling_cfg: Any) -> Generator:
    """Load ``model_path`` with the backend ``sampling_cfg.backend`` names (``transformers`` or ``vllm``).

    Args:
        model_path: model directory, hub name or ``asset:NAME``.
        model_cfg: a ``ModelConfig`` (dtype, attention kernel, trust_remote_code).
        sampling_cfg: a ``SamplingConfig`` (backend, batch size, vLLM parallelism).
    """
    from w2s.assets import resolve_model_path
    from w2s.errors import ConfigError, ConfigIssue

    backend = getattr(sampling_cfg, "backend", "transformers")
    path = resolve_model_path(model_path)
    if backend == "transformers":
        from w2s.generation.hf import HFGenerator

        return HFGenerator(path, model_cfg, sampling_cfg)
    if backend == "vllm":
        from w2s.generation.vllm_engine import VLLMGenerator

        return VLLMGenerator(path, model_cfg, sampling_cfg)
    raise ConfigError([ConfigIssue("backend", backend, "unknown generation backend",
                                   "choose transformers or vllm")])


__all__ = ["Generation", "Generator", "SAMPLING_PRESETS", "make_generator", "render_chat", "resolve_sampling"]
