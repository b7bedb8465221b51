"""``w2s explain KEY``: the help text, type and default of any config key, read from the schema."""

from __future__ import annotations

import dataclasses
import typing

from w2s.config.compose import _suggest
from w2s.config.schema import W2SConfig
from w2s.errors import ConfigError, ConfigIssue


def _describe(cls: type, prefix: str, depth: int) -> list[str]:
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(tp):
            lines.append(f"{key}:  {help_text}")
            if depth > 0:
                lines += _describe(tp, key + ".", depth - 1)
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        choices = f.metadata.get("choices")
        extra = f"  one of {choices}" if choices else ""
        tname = getattr(tp, "__name__", str(tp)).replace("typing.", "")
        lines.append(f"{key} ({tname}, default {default!r}){extra}\n    {help_text}")
    return lines


def explain(key: str = "") -> str:
    """Help for a key (a leaf) or a section (its fields, one level deep); empty: the top-level sections."""
    cls: type = W2SConfig
    if not key:
        return "\n".join(_describe(cls, "", 0))
    parts = key.split(".")
    for i, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            raise ConfigError([ConfigIssue(key, None, "unknown key", _suggest(key))])
        tp = typing.get_type_hints(cls)[part]
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                return f"{key}:  {fields[part].metadata.get('help', '')}\n" + "\n".join(_describe(tp, key + ".", 0))
            return "\n".join(_describe(cls, ".".join(parts[:-1]) + "." if i else "", 0)[j]
                             for j, f in enumerate(dataclasses.fields(cls)) if f.name == part)
        if not dataclasses.is_dataclass(tp):
            raise ConfigError([ConfigIssue(key, None, f"{'.'.join(parts[:i + 1])} is a value, not a section", "")])
        cls = tp
    return ""
