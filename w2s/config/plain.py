"""Config nodes as plain Python, the form in which they cross into actors and into hashes."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def to_plain(node: Any) -> Any:
    """A config node as plain Python (dicts, lists, scalars), e.g. to send to an actor or to hash."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
