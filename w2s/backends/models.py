"""What the trainers need to know about a model before loading it: its attention kernel, whether it ships code,
how long a sequence it takes.

OpenRLHF enables remote code for every model it loads (its ``Actor``, reward model and tokenizer helpers
hard-code the flag on), so a model directory that ships its own Python code (an ``auto_map`` entry in ``config.json``)
would run that code whatever the recipe says. w2s therefore refuses such a model unless the model section sets
``trust_remote_code: true``: :func:`w2s.config.validate.validate` refuses it before anything starts (for local
model directories named in the recipe), and :func:`guard_remote_code` refuses it again right before training
(for paths only known at run time, such as a previous round's policy).

This module imports neither torch nor OpenRLHF at import time: the config validator uses it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from w2s.errors import W2SError

log = logging.getLogger(__name__)


def training_attn(requested: str) -> str:
    """The attention kernel to train with: flash-attention only with CUDA and the real flash_attn package.

    Anything else (sdpa, eager) is returned as given. Without CUDA or flash-attn, flash_attention_2 falls back
    to sdpa with one warning, as the transformers generation backend does.
    """
    if not requested.startswith("flash"):
        return requested
    import torch

    if torch.cuda.is_available():
        try:
            import flash_attn

            # The CPU layer's import stub (w2s.compat) has a "+w2s" version: it has no attention kernels.
            if "w2s" not in getattr(flash_attn, "__version__", "w2s"):
                return requested
        except ImportError:
            pass
    log.warning("attn_implementation=%s needs CUDA and flash-attn; training with sdpa", requested)
    return "sdpa"


def _config_json(path: str | os.PathLike) -> dict[str, Any] | None:
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def ships_code(path: str | os.PathLike) -> bool:
    """True when the local model directory ``path`` ships its own Python code (``auto_map`` in config.json)."""
    data = _config_json(path)
    return bool(data and data.get("auto_map"))


def guard_remote_code(path: str, trust_remote_code: bool, *, key: str = "") -> None:
    """Refuse a model that ships Python code unless ``trust_remote_code`` is set (OpenRLHF would run it).

    Args:
        path: Model directory (a path that is not a local directory is not checked).
        trust_remote_code: The model section's ``trust_remote_code``.
        key: The config key that sets it, for the message (e.g. ``model.strong.trust_remote_code``).

    Raises:
        W2SError: the model ships code and the flag is false.
    """
    if trust_remote_code or not ships_code(path):
        return
    fix = f"set {key}=true" if key else ("set trust_remote_code=true in the model's section (model.strong, "
                                         "model.aligner or the judge's)")
    raise W2SError(f"{Path(path) / 'config.json'}: the model ships its own Python code (auto_map), which loading it "
                   f"(transformers, vLLM, OpenRLHF) would run; {fix} only if you trust that code")


def max_positions(path: str | os.PathLike) -> int | None:
    """The longest sequence a local model takes (its context length, as the generation engines read it), or None."""
    from w2s.generation.encoding import context_length

    known = context_length(path) if Path(path).is_dir() else None
    return known[0] if known else None


