"""Load a recipe: compose its ``defaults:``, apply ``key=value`` overrides, check it against the schema.

A recipe is a YAML file over :class:`w2s.config.schema.W2SConfig`. It may start from other recipes::

    defaults:            # paths relative to this file (".yaml" optional), merged in order
      - ../_base/tiny_models
      - _self_           # where this file's own keys go (last when omitted)
    train:
      method: dpo

The first comment line of a recipe is its one-line description (``w2s recipes`` lists it).
Command-line ``key=value`` overrides come last. Every problem (unknown key, wrong type, value outside
its choices, impossible combination) is collected and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from w2s.config.schema import W2SConfig
from w2s.errors import ConfigError, ConfigIssue
from w2s.shipped import RECIPES_DIR


# ----------------------------------------------------------------------------------------------- locating
def find_recipe(name: str | os.PathLike) -> Path:
    """A recipe by path, or by name under ``recipes/`` (``quickstart``, ``tiny/dpo``)."""
    candidates = [Path(name), RECIPES_DIR / name]
    candidates += [c.with_name(c.name + ".yaml") for c in candidates if c.suffix not in (".yaml", ".yml")]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    known = [str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in list_recipe_files()]
    close = difflib.get_close_matches(str(name).removesuffix(".yaml"), known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else " `w2s recipes` lists them."
    raise ConfigError([ConfigIssue("recipe", str(name), "no such recipe file or recipe name.", hint.strip())])


def list_recipe_files() -> list[Path]:
    """Runnable recipes: every YAML under recipes/ except building blocks in folders starting with `_`."""
    if not RECIPES_DIR.is_dir():
        return []
    return sorted(p for p in RECIPES_DIR.rglob("*.yaml")
                  if not any(part.startswith("_") for part in p.relative_to(RECIPES_DIR).parts))


def recipe_description(path: Path) -> str:
    """The recipe's first comment line."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line:
            break
    return ""


# ----------------------------------------------------------------------------------------------- composing
class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML keeps the last one, so a
    duplicated section would silently replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"key {key!r} appears twice (lines {seen[key].line + 1} and {key_node.start_mark.line + 1}); "
                    "keep one", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


# PyYAML follows YAML 1.1, where 1e-3 (no dot) is a string; every researcher writes learning rates that way.
_UniqueKeyLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                       re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                       list("-+0123456789"))


def _read_yaml(path: Path, issues: list[ConfigIssue], chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe with its defaults merged in, as a plain dict."""
    if path in chain:
        cycle = " -> ".join(str(p) for p in chain + (path,))
        issues.append(ConfigIssue("defaults", str(path), f"recipes include each other in a cycle: {cycle}",
                                  "remove one of the includes"))
        return {}
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        issues.append(ConfigIssue("recipe", where, f"not valid YAML: {getattr(e, 'problem', e)}", "fix the syntax"))
        return {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue("recipe", str(path), "a recipe must be a mapping of keys to values", ""))
        return {}
    defaults = data.pop("defaults", [])
    if not isinstance(defaults, list) or not all(isinstance(d, str) for d in defaults):
        issues.append(ConfigIssue(f"{path.name}: defaults", defaults, "must be a list of recipe paths",
                                  "write e.g. `defaults: [../_base/tiny_models, _self_]`"))
        defaults = []
    if "_self_" not in defaults:
        defaults = defaults + ["_self_"]
    merged: dict[str, Any] = {}
    for entry in defaults:
        if entry == "_self_":
            part = data
        else:
            target = (path.parent / entry)
            if target.suffix not in (".yaml", ".yml"):
                target = target.with_name(target.name + ".yaml")
            if not target.is_file():
                issues.append(ConfigIssue(f"{path.name}: defaults", entry, f"no recipe file {target}",
                                          "paths in `defaults` are relative to the recipe that names them"))
                continue
            part = _read_yaml(target.resolve(), issues, chain + (path,))
        merged = _deep_merge(merged, part)
    return merged


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: list[str]) -> tuple[dict[str, Any], list[ConfigIssue]]:
    """``key=value`` strings (values parsed as YAML) into a nested dict."""
    issues: list[ConfigIssue] = []
    out: dict[str, Any] = {}
    for item in overrides:
        if item.startswith("-"):
            key = item.lstrip("-").split("=", 1)[0]
            issues.append(ConfigIssue(item, item, "options are not flags", f"write `{key}=VALUE` instead"))
            continue
        if "=" not in item:
            issues.append(ConfigIssue(item, item, "an override must look like key=value", f"write `{item}=VALUE`"))
            continue
        key, raw = item.split("=", 1)
        try:
            value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                issues.append(ConfigIssue(key, raw, "conflicts with another override of a parent key", ""))
                break
        else:
            node[parts[-1]] = value
    return out, issues


# ----------------------------------------------------------------------------------------------- checking
def _schema_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        keys.append(key)
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _schema_keys(hints[f.name], key + ".")
    return keys


ALL_KEYS: list[str] = _schema_keys(W2SConfig)


def _suggest(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, ALL_KEYS, n=3, cutoff=0.6)
    close += [k for k in ALL_KEYS if k.rsplit(".", 1)[-1] == leaf and k not in close][:3]
    if not close:
        close = difflib.get_close_matches(leaf, ALL_KEYS, n=2, cutoff=0.5)
    return f"did you mean {' or '.join(close[:3])}?" if close else "`w2s explain KEY` shows the known keys"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _check_value(key: str, value: Any, tp: Any, meta: dict[str, Any], issues: list[ConfigIssue]) -> None:
    """Check one value against its field type (recursing into dataclasses, lists and dicts) and choices."""
    if isinstance(value, str) and ("${" in value or value == "???"):
        return  # interpolations are checked after resolution; ??? is the required-marker
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X] or X | None
        if value is None:
            return
        tp = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            issues.append(ConfigIssue(key, value, f"is a section ({tp.__name__}), not a single value",
                                      f"set its fields, e.g. {key}.{dataclasses.fields(tp)[0].name}=..."))
            return
        check_against(value, tp, key + ".", issues)
        return
    if origin is list:
        if not isinstance(value, list):
            issues.append(ConfigIssue(key, value, f"must be a list of {_type_name(args[0])}",
                                      f"write {key}=[...]"))
            return
        for i, item in enumerate(value):
            _check_value(f"{key}[{i}]", item, args[0], {}, issues)
        return
    if origin is dict:
        if not isinstance(value, dict):
            issues.append(ConfigIssue(key, value, "must be a mapping of names to entries", ""))
            return
        for name, item in value.items():
            _check_value(f"{key}.{name}", item, args[1], {}, issues)
        return
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, (str, int, float)) and not isinstance(value, bool),
    }.get(tp, True)
    if not ok:
        example = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}[tp]
        issues.append(ConfigIssue(key, value, f"must be {_type_name(tp)}, got {type(value).__name__}",
                                  f"set {key} to {example}"))
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        fix = f"did you mean {close[0]!r}? " if close else ""
        issues.append(ConfigIssue(key, value, f"must be one of {choices}", fix + f"choose one of {choices}"))


def check_against(data: dict[str, Any], cls: type, prefix: str, issues: list[ConfigIssue]) -> None:
    """Unknown keys, types and choices of a (nested) plain dict against a dataclass."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            issues.append(ConfigIssue(key, value, "unknown key", _suggest(key)))
            continue
        _check_value(key, value, hints[name], dict(fields[name].metadata), issues)


def _drop_key(data: dict[str, Any], key: str) -> None:
    parts = key.split("[")[0].split(".")
    node: Any = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)


# ----------------------------------------------------------------------------------------------- entry point
def load_config(recipe: str | os.PathLike, overrides: list[str] | None = None, *, job: str | None = None) -> DictConfig:
    """Compose, check and validate a recipe; the result is a read-only structured config.

    Args:
        recipe: recipe file path or name under recipes/.
        overrides: ``key=value`` strings applied last.
        job: what the config is for, when the command fixes it (``loop``, ``aligner``, ``correct``,
            ``popalign``); None: the recipe's own ``job`` key. Which fields are required depends on it.

    Raises:
        ConfigError: with every problem found, before anything heavy is imported or started.
    """
    from w2s.config.validate import validate  # cross-field rules

    path = find_recipe(recipe)
    issues: list[ConfigIssue] = []
    data = _read_yaml(path, issues)
    over, over_issues = parse_overrides(list(overrides or []))
    issues += over_issues
    data = _deep_merge(data, over)
    n_read = len(issues)
    check_against(data, W2SConfig, "", issues)
    if n_read:  # the recipe or the overrides could not be read: nothing more to check
        raise ConfigError(issues, str(path))
    # Drop what failed the schema so the cross-field rules still run on the rest: all errors at once.
    for issue in issues:
        _drop_key(data, issue.key)
    cfg = OmegaConf.merge(OmegaConf.structured(W2SConfig), OmegaConf.create(data))
    try:
        OmegaConf.resolve(cfg)
    except Exception as e:  # a broken ${...} interpolation
        raise ConfigError([ConfigIssue("interpolation", str(e).splitlines()[0], "cannot be resolved", "")],
                          str(path)) from None
    issues += validate(cfg, job=job)
    if issues:
        raise ConfigError(issues, str(path))
    OmegaConf.set_readonly(cfg, True)
    return cfg


def to_yaml(cfg: DictConfig | ListConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
