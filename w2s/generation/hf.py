"""The transformers generation backend: batched, left-padded, KV-cached ``generate`` on CPU or one GPU.

Decoding follows vLLM's order so both backends mean the same thing by the same settings: repetition
penalty (prompt and output tokens), frequency penalty (output tokens only; transformers has none, see
:class:`FrequencyPenaltyLogitsProcessor`), then temperature, top-k and top-p.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from w2s import progress as live
from w2s.generation.encoding import EncodedPrompt, encode_prompt, eos_token_ids, hash_seeds, log_truncation
from w2s.generation.result import Generation
from w2s.generation.sampling import resolve_sampling

log = logging.getLogger(__name__)

TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class FrequencyPenaltyLogitsProcessor(LogitsProcessor):
    """OpenAI/vLLM frequency penalty: ``logit[t] -= penalty * (times t occurs in the completion so far)``.

    Only completion tokens count (as in vLLM), so the processor is told where the (left-padded) prompt ends.
    """

    def __init__(self, penalty: float, prompt_length: int):
        self.penalty = float(penalty)
        self.prompt_length = int(prompt_length)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        if generated.shape[1] == 0 or self.penalty == 0.0:
            return scores
        counts = torch.zeros_like(scores)
        counts.scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.penalty * counts


def build_logits_processors(params: dict[str, Any], prompt_length: int) -> LogitsProcessorList:
    """The processors for resolved sampling ``params``, in vLLM's order (penalties, temperature, top-k, top-p)."""
    procs = LogitsProcessorList()
    if params["repetition_penalty"] != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(params["repetition_penalty"]))
    if params["frequency_penalty"] != 0.0:
        procs.append(FrequencyPenaltyLogitsProcessor(params["frequency_penalty"], prompt_length))
    if not params["greedy"]:
        if params["temperature"] != 1.0:
            procs.append(TemperatureLogitsWarper(params["temperature"]))
        if params["top_k"] > 0:
            procs.append(TopKLogitsWarper(params["top_k"]))
        if params["top_p"] < 1.0:
            procs.append(TopPLogitsWarper(params["top_p"]))
    return procs


class HFGenerator:
    """A causal LM loaded with transformers, generating for batches of already-rendered prompts.

    Args:
        model_path: local model directory (or a hub name where a hub is reachable).
        model_cfg: ``ModelConfig``: dtype, attention kernel, trust_remote_code.
        sampling_cfg: ``SamplingConfig``; its batch size is the default for :meth:`generate`.
        device: ``cuda`` when available, else ``cpu``, unless given.
    """

    def __init__(self, model_path: str, model_cfg: Any, sampling_cfg: Any, *, device: str | None = None):
        self.model_path = model_path
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        trust = bool(model_cfg.trust_remote_code)
        attn = model_cfg.attn_implementation
        if attn == "flash_attention_2" and self.device.type != "cuda":
            log.warning("flash_attention_2 needs CUDA; using sdpa on %s", self.device)
            attn = "sdpa"
        dtype = TORCH_DTYPES[model_cfg.dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:  # many base models ship without one; EOS is never attended
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation=attn,
                                                          trust_remote_code=trust).to(self.device).eval()
        self.eos_token_ids = eos_token_ids(self.tokenizer, self.model.generation_config.eos_token_id)
        self.default_batch = int(sampling_cfg.batch_prompts_per_actor)
        self.truncated_prompts = 0

    def encode(self, prompt: str, max_prompt_tokens: int) -> list[int]:
        """Token ids of a rendered prompt, as :func:`w2s.generation.encoding.encode_prompt` makes them."""
        return encode_prompt(self.tokenizer, prompt, max_prompt_tokens).ids

    @torch.inference_mode()
    def _generate_batch(self, batch: list[EncodedPrompt], params: dict[str, Any]) -> list[Generation]:
        pad = self.tokenizer.pad_token_id
        width = max(len(e.ids) for e in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for i, e in enumerate(batch):  # left padding: every prompt ends at the same position
            ids = e.ids
            input_ids[i, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[i, width - len(ids):] = 1
        gen_cfg = GenerationConfig(
            max_new_tokens=int(params["max_new_tokens"]), do_sample=not params["greedy"], temperature=1.0,
            top_k=0, top_p=1.0, eos_token_id=self.eos_token_ids, pad_token_id=pad, use_cache=True)
        out = self.model.generate(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                                  generation_config=gen_cfg,
                                  logits_processor=build_logits_processors(params, width))
        results = []
        eos = set(self.eos_token_ids)
        for i, e in enumerate(batch):
            completion = out[i, width:].tolist()
            stop = next((j for j, t in enumerate(completion) if t in eos), None)
            if stop is not None:
                completion, finish, count = completion[:stop], "stop", stop + 1
            else:
                finish, count = "length", len(completion)
            text = self.tokenizer.decode(completion, skip_special_tokens=True)
            results.append(Generation(text=text, prompt_tokens=len(e.ids), completion_tokens=count,
                                      finish_reason=finish, prompt_truncated=e.truncated))
        return results

    def generate(self, prompts: list[str], sampling_cfg: Any, *, seed: int, progress: bool = False,
                 batch_size: int | None = None, seeds: list[int] | None = None) -> list[Generation]:
        """Complete each rendered prompt; outputs are in input order.

        Prompts are batched by length (``batch_prompts_per_actor`` at a time) to waste little padding.
        Sampling is deterministic for a given ``seed``, prompts and batch size. With per-prompt ``seeds``
        (vLLM honours each one), each batch is seeded from its prompts' seeds instead: transformers draws a
        batch from one random stream, so a draw is reproducible for the same batch. ``truncated_prompts``
        counts the prompts cut to ``max_prompt_tokens`` (also logged).
        """
        params = resolve_sampling(sampling_cfg)
        size = int(batch_size or params["batch_prompts_per_actor"] or self.default_batch)
        limit = int(params["max_prompt_tokens"] or 0)
        encoded = [encode_prompt(self.tokenizer, p, limit) for p in prompts]
        self.truncated_prompts = log_truncation(log, encoded, limit)
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i].ids))
        results: list[Generation | None] = [None] * len(prompts)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(prompts), desc="generate", unit="row", dynamic_ncols=True)
        start, tokens = time.perf_counter(), 0
        live.start(len(prompts), "rows")
        torch.manual_seed(seed)
        for b in range(0, len(order), size):
            idx = order[b:b + size]
            if seeds is not None:
                torch.manual_seed(hash_seeds([seeds[i] for i in idx]))
            for i, gen in zip(idx, self._generate_batch([encoded[i] for i in idx], params), strict=True):
                results[i] = gen
                tokens += gen.completion_tokens
            live.update(b + len(idx), tokens=tokens)
            if bar is not None:
                bar.update(len(idx))
                bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.1f}")
        if bar is not None:
            bar.close()
        return [r for r in results if r is not None]

    def load_weights(self, model_path: str) -> None:
        """Take the weights of ``model_path`` (a checkpoint of the loaded architecture) in place; an engine asleep
        is awake afterwards."""
        from w2s.generation.weights import load_into

        with torch.no_grad():
            load_into(self.model, model_path)  # into the host copy while asleep
        self.model_path = model_path
        self.wake_up()

    def token_logprobs(self, ids: list[int]) -> list[float]:
        from w2s.generation.refit import hf_token_logprobs

        return hf_token_logprobs(self.model, ids)

    def sleep(self, *, discard: bool = False) -> bool:
        """Move the weights to host memory while another role uses the GPU (nothing to move on CPU); ``discard``
        changes nothing here: the next :meth:`load_weights` copies into the host copy as into GPU memory."""
        if self.device.type == "cpu":
            return False
        self.model.to("cpu")
        torch.cuda.empty_cache()
        return True

    def wake_up(self) -> None:
        self.model.to(self.device)  # (a no-op when awake)

    def close(self) -> None:
        """Free the model's memory."""
        import gc

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
