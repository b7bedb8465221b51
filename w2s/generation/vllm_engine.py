"""The vLLM generation backend (GPU, tensor parallel), imported lazily so w2s runs where vLLM is absent."""

from __future__ import annotations

import gc
from typing import Any

from w2s.errors import W2SError
from w2s.generation import Generation
from w2s.generation.sampling import resolve_sampling

VLLM_MISSING = ("the vllm generation backend needs the `vllm` package, which is not installed here; install it on "
                "a CUDA machine (`pip install -e .[gpu]`) or set the sampling section's backend=transformers")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise W2SError(f"{VLLM_MISSING} ({e})") from None
    return vllm


def sampling_params_kwargs(params: dict[str, Any], *, seed: int) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for resolved sampling ``params``.

    vLLM applies penalties, then temperature, top-k and top-p, the order the transformers backend copies.
    Prompts are truncated from the left with ``truncate_prompt_tokens`` (vLLM keeps the last k tokens).
    """
    kwargs: dict[str, Any] = {
        "n": 1,
        "max_tokens": int(params["max_new_tokens"]),
        "temperature": 0.0 if params["greedy"] else float(params["temperature"]),
        "top_p": 1.0 if params["greedy"] else float(params["top_p"]),
        "top_k": -1 if params["greedy"] or params["top_k"] <= 0 else int(params["top_k"]),
        "frequency_penalty": float(params["frequency_penalty"]),
        "repetition_penalty": float(params["repetition_penalty"]),
        "seed": int(seed),
    }
    if params.get("max_prompt_tokens"):
        kwargs["truncate_prompt_tokens"] = int(params["max_prompt_tokens"])
    return kwargs


class VLLMGenerator:
    """A model served in-process by ``vllm.LLM`` (one engine; tensor parallel over ``tensor_parallel_size`` GPUs).

    Args:
        model_path: model directory or hub name.
        model_cfg: ``ModelConfig``: dtype, trust_remote_code.
        sampling_cfg: ``SamplingConfig``: tensor_parallel_size, gpu_memory_utilization, max_prompt_tokens,
            max_new_tokens (together they bound the engine's context length), seed.
    """

    def __init__(self, model_path: str, model_cfg: Any, sampling_cfg: Any):
        vllm = _import_vllm()
        self._vllm = vllm
        max_len = int(getattr(sampling_cfg, "max_prompt_tokens", 0) or 0) + int(
            getattr(sampling_cfg, "max_new_tokens", 0) or 0)
        self.llm = vllm.LLM(
            model=model_path,
            tensor_parallel_size=int(getattr(sampling_cfg, "tensor_parallel_size", 1)),
            gpu_memory_utilization=float(getattr(sampling_cfg, "gpu_memory_utilization", 0.85)),
            dtype=getattr(model_cfg, "dtype", "bfloat16"),
            seed=int(getattr(sampling_cfg, "seed", None) or 0),
            trust_remote_code=bool(getattr(model_cfg, "trust_remote_code", False)),
            max_model_len=max_len or None,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def generate(self, prompts: list[str], sampling_cfg: Any, *, seed: int, progress: bool = False) -> list[Generation]:
        """Complete each rendered prompt (vLLM schedules its own batches); outputs are in input order."""
        params = resolve_sampling(sampling_cfg)
        sp = self._vllm.SamplingParams(**sampling_params_kwargs(params, seed=seed))
        outputs = self.llm.generate(prompts, sp, use_tqdm=progress)
        results = []
        for out in outputs:
            completion = out.outputs[0]
            results.append(Generation(text=completion.text, prompt_tokens=len(out.prompt_token_ids or []),
                                      completion_tokens=len(completion.token_ids),
                                      finish_reason=str(completion.finish_reason or "")))
        return results

    def close(self) -> None:
        """Shut the engine down and free GPU memory."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None)
            if callable(shutdown):
                shutdown()
            del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
