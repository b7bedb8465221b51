"""The interpretability figures: LAT heatmaps (the paper's Fig. 4a/b), separation by layer, control (Fig. 4c)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from w2s.eval.plots import _save


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_lat(scan: list[list[float]], path: Path, *, title: str, limit: float = 3.0) -> Path:
    """A layers x tokens heatmap of the (standardised) LAT scores, layer 0 at the bottom as in the paper."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    try:
        image = ax.imshow(scan, aspect="auto", origin="lower", cmap="RdBu_r", vmin=-limit, vmax=limit,
                          extent=(0.5, len(scan[0]) + 0.5, -0.5, len(scan) - 0.5))
        from matplotlib.ticker import MaxNLocator

        fig.colorbar(image, ax=ax, label="correction score (z)")
        ax.set(xlabel="generated token", ylabel="layer", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_separation(scores: list[float], explained: list[float], path: Path) -> Path:
    """Held-out separation and explained variance of the reading vector, by layer."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    try:
        layers = list(range(len(scores)))
        ax.plot(layers, scores, marker="o", label="held-out separation (share correct > copy)")
        ax.plot(layers, explained, marker="s", label="variance explained by V_c")
        ax.axhline(0.5, color="grey", lw=0.8, ls="--")
        ax.set(xlabel="layer", ylabel="share", ylim=(0, 1.05), title="Where the correction is represented")
        ax.legend(fontsize=8)
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_control(series: dict[str, list[dict[str, Any]]], fits: dict[str, dict[str, float]], path: Path) -> Path:
    """Mean token-level Levenshtein ratio against alpha, with each series' least-squares line and R^2."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    try:
        for name, rows in series.items():
            xs, ys = [r["alpha"] for r in rows], [r["levenshtein_ratio"] for r in rows]
            line = ax.plot(xs, ys, marker="o", ls="none", label=f"{name} (R² {fits[name]['r2']:.2f})")[0]
            f = fits[name]
            ax.plot([min(xs), max(xs)], [f["slope"] * x + f["intercept"] for x in (min(xs), max(xs))],
                    color=line.get_color(), lw=1)
        ax.set(xlabel="control coefficient α", ylabel="mean Levenshtein ratio (tokens)",
               title="Representation control")
        ax.legend(fontsize=8)
        return _save(fig, path)
    finally:
        plt.close(fig)
