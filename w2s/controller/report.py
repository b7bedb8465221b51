"""The researcher-facing summary of a run: ``report.md`` with a table per round and plots under ``plots/``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from w2s.data.files import atomic_write_text


def latest_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl with one row per (round, stage): the last one (a rerun stage logs again)."""
    path = run_dir / "metrics.jsonl"
    rows: dict[tuple[Any, str], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # the partial last line of a killed run
            rows[(row.get("round"), row.get("stage"))] = row
    return list(rows.values())


def _train_losses(run_dir: Path) -> dict[int, list[float]]:
    out = {}
    for manifest in sorted(run_dir.glob("round-*/train/manifest.json")):
        losses = json.loads(manifest.read_text()).get("losses") or []
        if losses:
            out[int(manifest.parent.parent.name.split("-")[1])] = losses
    return out


def _baseline_score(run_dir: Path) -> float | None:
    manifest = run_dir / "round-00" / "eval-answers" / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["metrics"].get("mean_score")
    return None


def write_plots(run_dir: Path, metrics: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plots = run_dir / "plots"
    plots.mkdir(exist_ok=True)
    written = []
    evals = [m for m in metrics if str(m.get("stage", "")).startswith("eval-vs-")]
    if evals:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
        for against in sorted({m["compare_to"] for m in evals}):
            pts = sorted((m["round"], m["win_minus_loss"]) for m in evals if m["compare_to"] == against)
            ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"vs {against}")
        ax1.axhline(0, color="grey", lw=0.8)
        ax1.set(xlabel="round", ylabel="win - loss (%)", title="Judge: new policy vs baseline")
        ax1.legend()
        initial = sorted((m["round"], m["mean_score"]) for m in evals if m["compare_to"] == "initial")
        base = _baseline_score(run_dir)
        xs = ([0] if base is not None else []) + [r for r, _ in initial]
        ys = ([base] if base is not None else []) + [s for _, s in initial]
        ax2.plot(xs, ys, marker="o")
        ax2.set(xlabel="round (0 = initial policy)", ylabel="mean judge score", title="Held-out judge score")
        for ax in (ax1, ax2):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.tight_layout()
        fig.savefig(plots / "eval.png", dpi=120)
        plt.close(fig)
        written.append(plots / "eval.png")
    losses = _train_losses(run_dir)
    if losses:
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, ls in sorted(losses.items()):
            ax.plot(range(1, len(ls) + 1), ls, label=f"round {k}")
        ax.set(xlabel="optimizer step", ylabel="training loss", title="Strong-policy training loss")
        ax.legend()
        fig.tight_layout()
        fig.savefig(plots / "train_loss.png", dpi=120)
        plt.close(fig)
        written.append(plots / "train_loss.png")
    return written


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    metrics = latest_metrics(run_dir)
    plots = write_plots(run_dir, metrics)
    lines = [f"# w2s run report: {run_dir.name}", ""]
    config = run_dir / "config.yaml"
    if config.exists():
        lines += ["Config: `config.yaml` (fully resolved; header names the w2s version and git revision).", ""]
    evals = [m for m in metrics if str(m.get("stage", "")).startswith("eval-vs-")]
    if evals:
        base = _baseline_score(run_dir)
        lines += ["## Evaluation on held-out prompts", "",
                  "win - loss = (wins - losses) / total x 100, as in the Aligner paper (App. B.2, Eq. 5).",
                  "" if base is None else f"Initial policy mean judge score: {base:.4f}.", "",
                  "| round | vs | wins | losses | ties | win - loss (%) | mean score | baseline mean |",
                  "|---|---|---|---|---|---|---|---|"]
        for m in sorted(evals, key=lambda m: (m["round"], m["compare_to"])):
            lines.append(f"| {m['round']} | {m['compare_to']} ({m['against']}) | {m['wins']} | {m['losses']} | "
                         f"{m['ties']} | {m['win_minus_loss']:+.1f} | {m['mean_score']:.4f} | "
                         f"{m['mean_score_baseline']:.4f} |")
        lines.append("")
    stages = [m for m in metrics if not str(m.get("stage", "")).startswith("eval-vs-")]
    if stages:
        lines += ["## Stages", "", "| round | stage | numbers |", "|---|---|---|"]
        for m in sorted(stages, key=lambda m: (m.get("round") or 0, m["time"])):
            nums = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()
                             if k not in ("round", "stage", "time") and v is not None)
            lines.append(f"| {m.get('round') if m.get('round') is not None else '-'} | {m['stage']} | {nums} |")
        lines.append("")
    for p in plots:
        lines += [f"![{p.stem}](plots/{p.name})", ""]
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
