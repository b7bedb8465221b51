"""The report's plots: omega per round with its 95% CI, and agreement between judges (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, format="png")
    return path


def plot_omega(points: list[dict], path: Path, *, title: str = "") -> Path:
    """ω per round with 95% CI error bars, one series per distinct ``points[i]["series"]``; saves a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(str(p["series"]) for p in points))
    step = 0.08 if len(series) <= 4 else 0.3 / len(series)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    try:
        for k, name in enumerate(series):
            rows = sorted((p for p in points if str(p["series"]) == name), key=lambda p: p["round"])
            dx = (k - (len(series) - 1) / 2) * step
            color = f"C{k % 10}"
            xs = [p["round"] + dx for p in rows]
            ax.plot(xs, [p["omega"] for p in rows], "-o", color=color, lw=1.6, ms=5, label=name)
            bars = [p for p in rows if p.get("ci_low") is not None and p.get("ci_high") is not None]
            if bars:
                ax.errorbar([p["round"] + dx for p in bars], [p["omega"] for p in bars],
                            yerr=[[p["omega"] - p["ci_low"] for p in bars], [p["ci_high"] - p["omega"] for p in bars]],
                            fmt="none", ecolor=color, elinewidth=1.2, capsize=3)
        ax.axhline(0, color="0.45", lw=0.9, ls="--", zorder=0)
        rounds = sorted({int(p["round"]) for p in points})
        if rounds:
            ax.set_xticks(rounds)
            ax.legend(frameon=False, fontsize=9)
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
        ax.set_xlabel("round")
        ax.set_ylabel("ω = (wins − losses) / N (%)")
        ax.grid(axis="y", color="0.92")
        ax.spines[["top", "right"]].set_visible(False)
        if title:
            ax.set_title(title)
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_agreement(names: list[str], matrix: list[list[float | None]], path: Path, *, title: str = "") -> Path:
    """Heatmap of pairwise judge agreement (0..1, annotated; None = not comparable, grey); saves a PNG."""
    n = len(names)
    if n == 0 or len(matrix) != n or any(len(r) != n for r in matrix):
        raise ValueError(f"plot_agreement: need a non-empty {n}x{n} matrix for {n} names")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[np.nan if v is None else float(v) for v in r] for r in matrix], dtype=float)
    values = np.ma.masked_invalid(grid)
    values.mask = np.ma.getmaskarray(values)  # a full boolean mask even when nothing is missing
    cmap = plt.get_cmap("viridis").with_extremes(bad="0.82")
    side = max(3.5, 1.0 + 0.9 * n)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    try:
        im = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=1.0)
        for i in range(n):
            for j in range(n):
                v = None if values.mask[i, j] else float(values[i, j])
                text, color = ("—", "0.3") if v is None else (f"{v:.2f}", "black" if v > 0.6 else "white")
                ax.text(j, i, text, ha="center", va="center", color=color, fontsize=10)
        ax.set_xticks(range(n), labels=names, rotation=35, ha="right")
        ax.set_yticks(range(n), labels=names)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="agreement")
        if title:
            ax.set_title(title)
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_losses(losses: dict[int, list[float]], path: Path, *, title: str = "Strong-policy training loss",
                ylabel: str = "training loss") -> Path:
    """A value per optimizer step (the training loss unless ``ylabel`` says otherwise), one line per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    try:
        for k, ls in sorted(losses.items()):
            ax.plot(range(1, len(ls) + 1), ls, label=f"round {k}")
        ax.set(xlabel="optimizer step", ylabel=ylabel, title=title)
        ax.legend()
        return _save(fig, path)
    finally:
        plt.close(fig)
