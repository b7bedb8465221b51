"""``w2s explain KEY``: the help text, type and default of any config key, read from the schema."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from w2s.config.compose import _suggest
from w2s.config.schema import W2SConfig
from w2s.errors import ConfigError, ConfigIssue


def _dict_value(tp: Any) -> type | None:
    """The dataclass of a ``dict[str, Dataclass]`` field (entries by name, e.g. ``eval.judges.NAME``), else None."""
    if typing.get_origin(tp) is dict:
        value = typing.get_args(tp)[1]
        return value if dataclasses.is_dataclass(value) else None
    return None


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
        entry = _dict_value(tp)
        if entry is not None:  # the entries' names, not their every default
            names = sorted(f.default_factory()) if f.default_factory is not dataclasses.MISSING else []
            lines.append(f"{key}.NAME ({entry.__name__} by name; defined: {names or 'none'})\n    {help_text}\n"
                         f"    `w2s explain {key}.NAME` lists an entry's fields")
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
    if not key:
        return "\n".join(_describe(W2SConfig, "", 0))
    return _explain(W2SConfig, key.split("."), 0, key)


def _explain(cls: type, parts: list[str], i: int, key: str) -> str:
    part = parts[i]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if part not in fields:
        raise ConfigError([ConfigIssue(key, None, "unknown key", _suggest(key))])
    tp = typing.get_type_hints(cls)[part]
    here = ".".join(parts[:i + 1])
    entry = _dict_value(tp)
    if i == len(parts) - 1:
        if dataclasses.is_dataclass(tp):
            return f"{here}:  {fields[part].metadata.get('help', '')}\n" + "\n".join(_describe(tp, here + ".", 0))
        prefix = ".".join(parts[:i]) + "." if i else ""
        return next(line for f, line in zip(dataclasses.fields(cls), _describe(cls, prefix, 0)) if f.name == part)
    if entry is not None:  # NAME.field: a field of the entry's dataclass, whatever the entry's name
        if i + 2 == len(parts):
            named = ".".join(parts[:i + 2])
            return f"{named}:  an entry of {here}\n" + "\n".join(_describe(entry, named + ".", 0))
        return _explain_entry(entry, parts, i + 2, key)
    if not dataclasses.is_dataclass(tp):
        raise ConfigError([ConfigIssue(key, None, f"{here} is a value, not a section", "")])
    return _explain(tp, parts, i + 1, key)


def _explain_entry(entry: type, parts: list[str], i: int, key: str) -> str:
    """``_explain`` within an entry's dataclass; keys are shown with the entry's full prefix."""
    try:
        sub = _explain(entry, parts[i:], 0, ".".join(parts[i:]))
    except ConfigError:
        import difflib

        close = difflib.get_close_matches(parts[i], [f.name for f in dataclasses.fields(entry)], n=3)
        fix = f"did you mean {' or '.join('.'.join(parts[:i] + [c]) for c in close)}?" if close else \
            f"`w2s explain {'.'.join(parts[:i])}` lists the fields"
        raise ConfigError([ConfigIssue(key, None, "unknown key", fix)]) from None
    head = ".".join(parts[:i]) + "."
    return "\n".join(head + line if line and not line.startswith(" ") else line for line in sub.split("\n"))
