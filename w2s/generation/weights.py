"""New weights for a loaded model: the checkpoint a train stage wrote, copied into an engine that keeps running.

The round loop's policy changes after every train stage while its architecture does not, so a generator keeps its
process, imports, tokenizer and engine, and only the weights move (see :mod:`w2s.roles`). A checkpoint is taken in
place only when it is the same architecture as the loaded model: :func:`architecture_change` says what differs
otherwise, and the caller starts a fresh engine instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from w2s.errors import W2SError

# config.json fields that do not change the tensors' names or shapes.
_NOT_ARCHITECTURE = {"_name_or_path", "torch_dtype", "dtype", "transformers_version", "use_cache", "architectures",
                     "_attn_implementation_autoset", "attn_implementation", "pad_token_id", "bos_token_id",
                     "eos_token_id"}


def checkpoint_files(model_dir: str | Path) -> list[Path]:
    """The safetensors files of a model folder (every shard its index names, or the single file).

    Raises:
        W2SError: the folder holds no safetensors weights (an adapter alone, or .bin files).
    """
    d = Path(model_dir)
    index = d / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        return [d / n for n in names]
    if (d / "model.safetensors").exists():
        return [d / "model.safetensors"]
    raise W2SError(f"{d} holds no safetensors weights (model.safetensors or its index): cannot load them in place")


def _architecture(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    cfg = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    return {k: v for k, v in cfg.items() if k not in _NOT_ARCHITECTURE}


def architecture_change(loaded_dir: str | Path, new_dir: str | Path) -> str:
    """Empty when ``new_dir``'s weights fit the model loaded from ``loaded_dir``; else what differs."""
    try:
        checkpoint_files(new_dir)
    except W2SError as e:
        return str(e)
    a, b = _architecture(loaded_dir), _architecture(new_dir)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return f"config.json differs in {', '.join(diff[:5])}" if diff else ""


def load_into(model: Any, model_dir: str | Path) -> int:
    """Copy the checkpoint in ``model_dir`` into the transformers ``model`` in place (cast to its dtype, on its
    device); returns the number of tensors copied.

    Raises:
        W2SError: a tensor of the model is missing from the checkpoint (tied weights aside) or the checkpoint has
            tensors the model lacks.
    """
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for f in checkpoint_files(model_dir):
        state.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied output layer (lm_head sharing the embedding) is saved once, under the embedding's name.
    loaded = {p.data_ptr() for name, p in model.named_parameters() if name in state}
    params = dict(model.named_parameters())
    missing = [k for k in missing if k in params and params[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise W2SError(f"{model_dir} does not fit the loaded model: missing {missing[:3]}, unexpected "
                       f"{list(unexpected)[:3]}")
    return len(state)
