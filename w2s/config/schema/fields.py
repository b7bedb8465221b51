"""How a config field is declared: type, default, help, allowed values, lower bound."""

from __future__ import annotations

from dataclasses import field
from typing import Any

from omegaconf import MISSING

__all__ = ["ATTENTION", "BACKENDS", "DTYPES", "MISSING", "_f"]


def _f(default: Any = MISSING, help: str = "", choices: list[str] | None = None, factory: Any = None,
       minimum: float | None = None) -> Any:
    """A dataclass field with its help text (and its allowed values, when the set is closed; its lower bound, for
    counts and limits, checked by :func:`w2s.config.checks.bound_issues`)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if minimum is not None:
        meta["minimum"] = minimum
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


DTYPES = ["bfloat16", "float16", "float32"]
ATTENTION = ["sdpa", "eager", "flash_attention_2"]
BACKENDS = ["transformers", "vllm"]
