"""Ray role actors. Each exposes a few coarse methods; the driver (w2s.roles, w2s.controller) owns all data flow."""

from __future__ import annotations

from typing import Any


def typed(schema: type, data: Any) -> Any:
    """A config section that crossed the actor boundary, back as its schema's typed config: a misspelt or unknown
    field is an error here rather than a silent default."""
    from omegaconf import OmegaConf

    return OmegaConf.merge(OmegaConf.structured(schema), data)
