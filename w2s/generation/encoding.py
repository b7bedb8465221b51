"""What every backend does to a rendered prompt before the model sees it, so that both see the same token ids.

* :func:`encode_prompt`: the token ids of a rendered prompt: BOS added unless the text already starts with it
  (chat templates write it themselves), then cut from the left to ``max_prompt_tokens`` (the end of a prompt,
  with the assistant's header, matters most).
* :func:`request_seeds`: one sampling seed per request, derived from the call's seed and the request's own
  token ids, so that a request samples the same completion whatever it is batched or sharded with.
* :func:`context_length` and :func:`context_issues`: the model's context length, read from its config files,
  checked against ``max_prompt_tokens + max_new_tokens`` before an engine starts.

Nothing here imports torch or vLLM: the config validator may use :func:`context_issues`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2s.errors import ConfigIssue

# The config.json keys models state their context length under (the smallest one present wins).
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length",
                "max_seq_length", "seq_len", "model_max_length")
# RoPE scalings that stretch the context beyond max_position_embeddings by their factor; the others (llama3,
# yarn, longrope, ...) state the stretched length in the config already.
_STRETCHING_ROPE = ("linear", "dynamic")


@dataclass(frozen=True)
class EncodedPrompt:
    """A rendered prompt's token ids and whether they were cut to ``max_prompt_tokens``."""

    ids: list[int]
    truncated: bool


def encode_prompt(tokenizer: Any, text: str, max_prompt_tokens: int) -> EncodedPrompt:
    """Token ids of a rendered prompt, truncated from the left to ``max_prompt_tokens`` (0: no limit).

    Special tokens (BOS) are added unless the text already starts with the BOS token, as chat templates do.
    """
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    ids = list(tokenizer(text, add_special_tokens=add_special)["input_ids"])
    if max_prompt_tokens and len(ids) > max_prompt_tokens:
        return EncodedPrompt(ids[-max_prompt_tokens:], True)
    return EncodedPrompt(ids, False)


def eos_token_ids(tokenizer: Any, generation_eos: int | list[int] | None) -> list[int]:
    """The ids that end a completion: the generation config's EOS id(s) and the tokenizer's EOS token."""
    ids = set(generation_eos if isinstance(generation_eos, list) else [generation_eos] if generation_eos is not None
              else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(int(i) for i in ids)


def log_truncation(logger: Any, encoded: list[EncodedPrompt], max_prompt_tokens: int) -> int:
    """Log how many prompts were cut to ``max_prompt_tokens`` (a warning, when any were) and return the count."""
    count = sum(e.truncated for e in encoded)
    if count:
        logger.warning("%d of %d prompts were longer than max_prompt_tokens=%d tokens and were cut from the left",
                       count, len(encoded), max_prompt_tokens)
    return count


def hash_seeds(seeds: list[int]) -> int:
    """One 63-bit seed from several (a batch's, for engines that draw a batch from one random stream)."""
    return derive_seed("batch", *seeds)


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed for one request from anything that identifies it (a base seed, a cache key, ...)."""
    digest = hashlib.sha256(("w2s-seed:" + ":".join(map(str, parts))).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def request_seeds(seed: int, prompts: list[list[int]]) -> list[int]:
    """A 63-bit seed per prompt from the call's ``seed``, the prompt's token ids and its occurrence index.

    The occurrence index (0 for the first copy of a prompt in this call, 1 for the second, ...) keeps
    repeated prompts from sampling the same completion; it depends only on the order of equal prompts.
    """
    seen: dict[tuple[int, ...], int] = {}
    seeds = []
    for ids in prompts:
        key = tuple(ids)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        h = hashlib.sha256(f"w2s-request:{int(seed)}:{occurrence}:".encode())
        h.update(",".join(map(str, ids)).encode())
        seeds.append(int.from_bytes(h.digest()[:8], "big") >> 1)
    return seeds


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def context_length(model_dir: str | os.PathLike) -> tuple[int, str] | None:
    """The longest sequence a local model takes and where that number comes from, or None if unknown.

    Reads ``config.json`` (or its ``text_config``): the smallest of :data:`CONTEXT_KEYS`, times a linear or
    dynamic RoPE scaling factor; then the tokenizer's ``model_max_length`` when that is smaller.
    """
    folder = Path(model_dir)
    config = _read_json(folder / "config.json")
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    found = [(int(text[k]), f"config.json {k}") for k in CONTEXT_KEYS
             if isinstance(text.get(k), int) and not isinstance(text.get(k), bool) and text[k] > 0]
    best = min(found) if found else None
    rope = text.get("rope_scaling") or text.get("rope_parameters") or {}
    if best is not None and isinstance(rope, dict):
        kind = rope.get("rope_type", rope.get("type"))
        factor = rope.get("factor")
        if kind in _STRETCHING_ROPE and isinstance(factor, int | float) and factor > 1:
            best = (int(best[0] * factor), f"{best[1]} x rope_scaling factor {factor}")
    limit = _read_json(folder / "tokenizer_config.json").get("model_max_length")
    if isinstance(limit, int) and limit > 0 and (best is None or limit < best[0]):
        best = (limit, "tokenizer_config.json model_max_length")
    return best


def known_context(model_dir: str | os.PathLike | None, declared: tuple[int, str] | None = None
                  ) -> tuple[int, str] | None:
    """A model's context length and its source: read from its local config files, else the one a recipe states
    (``declared``: length and key; 0 is unknown), else None."""
    known = context_length(model_dir) if model_dir is not None and Path(model_dir).is_dir() else None
    return known or (declared if declared and declared[0] > 0 else None)


def context_issues(key: str, model_dir: str | os.PathLike, max_prompt_tokens: int,
                   max_new_tokens: int, *, declared: tuple[int, str] | None = None) -> list[ConfigIssue]:
    """A problem when ``max_prompt_tokens + max_new_tokens`` exceeds the model's context length.

    Args:
        key: the sampling section's key (e.g. ``generate``), for the message; empty for bare field names.
        model_dir: a local model directory (anything else is not checked).
        max_prompt_tokens: the section's prompt budget (0: no truncation, so only max_new_tokens is checked).
        max_new_tokens: the section's completion budget.
        declared: the context length a recipe states (``model.*.context_length``) and its key: checked where the
            model is not local (a hub name); a local model's own config files win.
    """
    known = known_context(model_dir, declared)
    if known is None:
        return []
    limit, source = known
    need = int(max_prompt_tokens or 0) + int(max_new_tokens)
    if need <= limit:
        return []
    prefix = f"{key}." if key else ""
    room = max(limit - int(max_new_tokens), 0)
    return [ConfigIssue(
        f"{prefix}max_prompt_tokens + {prefix}max_new_tokens", f"{int(max_prompt_tokens or 0)} + {max_new_tokens}",
        f"exceeds the model's context length {limit} ({source} of {model_dir})",
        f"lower {prefix}max_prompt_tokens to at most {room} or {prefix}max_new_tokens so that the two add up to "
        f"{limit} or less")]
