"""What a stage's config is, as its manifest records it, and how it changed since: the resolved values of the
config sections the stage depends on (defaults included), and for manifests of an older w2s the hash of the values
that differed from the schema's defaults."""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

from w2s.config.plain import to_plain


def _changes(value: Any, default: Any) -> Any:
    """The parts of ``value`` that differ from ``default`` (nested dicts compared key by key)."""
    if isinstance(value, dict) and isinstance(default, dict):
        out = {k: _changes(v, default.get(k, _ABSENT)) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _ABSENT}
    return _ABSENT if value == default else value


_ABSENT = object()


@functools.cache
def _schema_defaults() -> DictConfig:
    """The schema's defaults, built once (read-only): a stage's check and its manifest each hash the config, and
    building the structured schema takes about a tenth of a second each time."""
    from w2s.config.schema import W2SConfig

    defaults = OmegaConf.structured(W2SConfig)
    OmegaConf.set_readonly(defaults, True)
    return defaults


def config_values(cfg: DictConfig, keys: list[str]) -> dict[str, Any]:
    """The resolved values of a stage's config sections, as its manifest records them (defaults included: a default
    that a later w2s changes is a change to the stage)."""
    return {k: to_plain(OmegaConf.select(cfg, k)) for k in keys}


def config_changes(recorded: dict[str, Any], cfg: DictConfig, keys: list[str]) -> list[str]:
    """Each config key whose value differs from the one a finished stage recorded, as ``key: THEN -> NOW``. A key the
    record lacks (added to w2s since) counts only when it is set to other than its default."""
    now, defaults = config_values(cfg, keys), _schema_defaults()
    out: list[str] = []

    def walk(key: str, then: Any, value: Any, default: Any) -> None:
        if isinstance(value, dict) and isinstance(then, dict):
            for k in sorted(set(value) | set(then)):
                walk(f"{key}.{k}", then.get(k, _ABSENT), value.get(k, _ABSENT),
                     default.get(k, _ABSENT) if isinstance(default, dict) else _ABSENT)
        elif then is _ABSENT:
            if value != default and value is not _ABSENT:
                out.append(f"{key}: unset -> {value!r}")
        elif value != then:
            out.append(f"{key}: {then!r} -> {'removed' if value is _ABSENT else repr(value)}")

    for k in keys:
        walk(k, recorded.get(k, _ABSENT), now[k], to_plain(OmegaConf.select(defaults, k)))
    return out


def config_hash(cfg: DictConfig, keys: list[str]) -> str:
    """Hash of what a stage depends on: the values of the given config sections that differ from the schema's
    defaults, so that a field added to the schema later (with a default) does not invalidate finished stages."""
    defaults = _schema_defaults()
    parts = {k: _changes(to_plain(OmegaConf.select(cfg, k)), to_plain(OmegaConf.select(defaults, k))) for k in keys}
    parts = {k: v for k, v in parts.items() if v is not _ABSENT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
