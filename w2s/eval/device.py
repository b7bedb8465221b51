"""Where a judge model runs (a module of its own: every kind of judge asks it)."""

from __future__ import annotations


def pick_device(device: str = "") -> str:
    """``device`` when given, else ``cuda`` when CUDA is available to this process, else ``cpu``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
