"""Where the files w2s ships beside its code are: the recipes (with their data) and the Slurm templates.

In a source checkout (an editable install included) they are the top-level ``recipes/`` and ``launch/`` folders,
the ones users read and copy from. A wheel carries the same folders inside the package, as ``w2s/_recipes`` and
``w2s/_launch`` (``setup.py`` maps them), so that a plain ``pip install w2s`` finds them too.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The source checkout w2s runs from, if it runs from one (an installed wheel has no pyproject.toml above it).
CHECKOUT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None


def shipped_dir(name: str) -> Path:
    """``recipes`` or ``launch``: the checkout's folder when there is one, else the wheel's copy."""
    if CHECKOUT is not None and (CHECKOUT / name).is_dir():
        return CHECKOUT / name
    return PACKAGE_DIR / f"_{name}"


#: Recipes by name (``w2s run tiny/dpo``); W2S_RECIPES points at a folder of your own instead.
RECIPES_DIR = Path(os.environ.get("W2S_RECIPES") or shipped_dir("recipes"))
SLURM_TEMPLATE_DIR = shipped_dir("launch") / "slurm"


def resolve_shipped(path: Path) -> Path | None:
    """A relative ``recipes/...`` or ``launch/...`` path (as recipes name their data) in the shipped folders, or
    None for any other path. W2S_RECIPES is tried first, then the shipped recipes, so that a copied recipes folder
    may hold its own data or fall back to the shipped data."""
    if path.is_absolute() or not path.parts or path.parts[0] not in ("recipes", "launch"):
        return None
    rest = Path(*path.parts[1:])
    bases = [RECIPES_DIR, shipped_dir("recipes")] if path.parts[0] == "recipes" else [shipped_dir("launch")]
    for base in bases:
        if (base / rest).exists():
            return base / rest
    return bases[-1] / rest


def resolve_path(path: str) -> Path:
    """A data or model path from a recipe: absolute, else relative to the working directory, else (``recipes/...``,
    ``launch/...``) one of the files shipped with w2s."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return resolve_shipped(p) or p
