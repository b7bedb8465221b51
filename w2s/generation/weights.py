"""New weights for a loaded model: the checkpoint a train stage wrote, copied into an engine that keeps running.

The round loop's policy changes after every train stage while its architecture does not, so a generator keeps its
process, imports, tokenizer and engine, and only the weights move (see :mod:`w2s.roles`). A checkpoint is taken in
place only when its tensors fit the loaded model (names and shapes, read from the safetensors headers):
:func:`architecture_change` says what differs otherwise, and the caller starts a fresh engine instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from w2s.errors import W2SError

# A tied output layer is saved once, under the embedding's name, by some writers and twice by others.
_TIED = ("lm_head.weight",)
# What fixes a standard decoder's tensors, for a loaded model with no safetensors to read (``.bin`` weights).
_SHAPE_KEYS = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "vocab_size", "tie_word_embeddings")


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


def tensor_specs(model_dir: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every tensor of a checkpoint, name -> (dtype, shape), read from the safetensors headers alone (no weights
    are loaded: the first 8 bytes give the header's length, the header is JSON)."""
    specs: dict[str, tuple[str, tuple[int, ...]]] = {}
    for f in checkpoint_files(model_dir):
        with open(f, "rb") as fh:
            size = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(size))
        for name, spec in header.items():
            if name != "__metadata__":
                specs[name] = (str(spec["dtype"]), tuple(int(d) for d in spec["shape"]))
    return specs


def architecture_change(loaded_dir: str | Path, new_dir: str | Path) -> str:
    """Empty when ``new_dir``'s tensors fit the model loaded from ``loaded_dir``; else what differs.

    The tensors decide, not ``config.json``: a hub config and the same model saved by another transformers
    version spell their keys differently (``rope_theta`` against ``rope_parameters``, ``head_dim`` written or not)
    and describe the same tensors. They fit when both hold the same tensor names with the same shapes (an output
    layer tied to the embedding may be saved or not). Another dtype fits: the engines cast what they copy in
    (vLLM's weight loaders and :func:`load_into` alike), and the refit check (:mod:`w2s.generation.refit`) then
    compares what the engine computes with what the trainer did.
    """
    try:
        new = tensor_specs(new_dir)
    except W2SError as e:
        return str(e)
    try:
        old = tensor_specs(loaded_dir)
    except W2SError:
        return _config_change(loaded_dir, new_dir)
    tied = {n for n in _TIED if (n in old) != (n in new)}
    names = (set(old) | set(new)) - tied
    only_old = sorted(n for n in names if n not in new)
    only_new = sorted(n for n in names if n not in old)
    if only_old or only_new:
        parts = ([f"{len(only_old)} tensor(s) only in the loaded model ({', '.join(only_old[:3])})"] if only_old
                 else []) + ([f"{len(only_new)} only in the new one ({', '.join(only_new[:3])})"] if only_new else [])
        return "the checkpoints hold other tensors: " + "; ".join(parts)
    shapes = [f"{n} {list(old[n][1])} -> {list(new[n][1])}" for n in sorted(names) if old[n][1] != new[n][1]]
    if shapes:
        return f"{len(shapes)} tensor(s) change shape: {', '.join(shapes[:3])}"
    return ""


def _config_change(loaded_dir: str | Path, new_dir: str | Path) -> str:
    def shape(d: str | Path) -> dict[str, Any]:
        path = Path(d) / "config.json"
        cfg = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        return {k: cfg.get(k) for k in _SHAPE_KEYS}

    a, b = shape(loaded_dir), shape(new_dir)
    diff = [f"{k} {a[k]} -> {b[k]}" for k in _SHAPE_KEYS if a[k] != b[k]]
    return f"config.json differs in {', '.join(diff)}" if diff else ""


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
