"""The residual stream of a transformers decoder: read every layer's output, or add a vector to chosen layers.

Both work through forward hooks on the decoder layers (``model.model.layers`` and the other usual places), so any
causal LM that transformers loads works without wrapping. A layer's output is its hidden-state tensor (or the first
element of the tuple older layers return): exactly the residual stream after that layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w2s.errors import W2SError

_LAYER_PATHS = ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "model.model.layers")


def decoder_layers(model: Any) -> list[Any]:
    """The model's decoder layers, in order."""
    for path in _LAYER_PATHS:
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None and len(obj) > 0:
            return list(obj)
    raise W2SError(f"{type(model).__name__}: no decoder layers found (looked for {', '.join(_LAYER_PATHS)})")


def _hidden(output: Any) -> Any:
    return output[0] if isinstance(output, tuple) else output


class ResidualReader:
    """``with ResidualReader(model) as r: model(...)``; then ``r.states[l]`` is layer l's output, [batch, seq, hidden]
    (float32, on the CPU), of the last forward."""

    def __init__(self, model: Any):
        self.layers = decoder_layers(model)
        self.states: list[Any] = [None] * len(self.layers)
        self._handles: list[Any] = []

    def __enter__(self) -> ResidualReader:
        for i, layer in enumerate(self.layers):
            def keep(_module: Any, _inputs: Any, output: Any, i: int = i) -> None:
                self.states[i] = _hidden(output).detach().float().cpu()

            self._handles.append(layer.register_forward_hook(keep))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class ResidualSteer:
    """``with ResidualSteer(model, {layer: vector}): model.generate(...)`` adds each vector to that layer's output at
    every position (the paper's M' = M + alpha V_c, with alpha folded into the vectors). An empty mapping changes
    nothing."""

    def __init__(self, model: Any, vectors: Mapping[int, Any]):
        self.layers = decoder_layers(model)
        bad = [i for i in vectors if not 0 <= i < len(self.layers)]
        if bad:
            raise W2SError(f"control layers {bad} do not exist: the model has {len(self.layers)} layers (0-based)")
        self.vectors = dict(vectors)
        self._handles: list[Any] = []

    def __enter__(self) -> ResidualSteer:
        for i, vector in self.vectors.items():
            def add(_module: Any, _inputs: Any, output: Any, v: Any = vector) -> Any:
                hidden = _hidden(output)
                shifted = hidden + v.to(device=hidden.device, dtype=hidden.dtype)
                return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

            self._handles.append(self.layers[i].register_forward_hook(add))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
