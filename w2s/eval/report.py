"""Reports of comparisons: the same sections written as a self-contained HTML page and as Markdown.

Both the loop's run report and ``w2s eval`` build their pages from the pieces here: a table of omega with its CI
per comparison and judge, the per-category breakdown, judge agreement, and side-by-side samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from w2s.data.files import atomic_write_text
from w2s.eval.html import Figure, Samples, Section, Table, Text, write_html

OMEGA_NOTE = ("ω = (wins − losses) / N × 100 (the Aligner paper, App. B.2, Eq. 5), with a 95% paired bootstrap "
              "CI over prompts and a two-sided sign test (ties dropped). Pairwise judges judge each pair in both "
              "orders; orders that disagree count as a tie (position consistency: the share that agree). "
              "Undecided: prompts whose verdict could not be parsed, not counted in N.")


def _pct(x: Any) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.1f}"


def omega_table(rows: Sequence[Mapping[str, Any]], label_columns: Sequence[tuple[str, str]], caption: str = ""
                ) -> Table:
    """One row per (comparison, judge): ``label_columns`` are (header, key) pairs naming the comparison."""
    columns = [h for h, _ in label_columns] + ["judge", "dimension", "ω (%)", "95% CI", "W", "L", "T", "N",
                                               "undecided", "p", "position-consistent", "words (cand / base)"]
    out = []
    for r in rows:
        pc = r.get("position_consistency")
        out.append([str(r.get(k, "")) for _, k in label_columns] + [
            r["judge"], r["dimension"], _pct(r["omega"]), f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]",
            r["wins"], r["losses"], r["ties"], r["n"], r["unparsed"], f"{r['p_value']:.3g}",
            "" if pc is None else f"{pc:.0%}",
            f"{r['mean_words_candidate']:.0f} / {r['mean_words_baseline']:.0f}"])
    return Table(columns, out, caption)


def category_table(rows: Sequence[Mapping[str, Any]]) -> Table | None:
    """omega per category and judge (rows: summaries with ``by_category``)."""
    out = []
    for r in rows:
        for cat, c in sorted((r.get("by_category") or {}).items()):
            out.append([r["judge"], cat, _pct(c["omega"]), f"[{_pct(c['ci_low'])}, {_pct(c['ci_high'])}]",
                        c["wins"], c["losses"], c["ties"], c["n"]])
    if not out:
        return None
    return Table(["judge", "category", "ω (%)", "95% CI", "W", "L", "T", "N"], out, "By category of the prompts.")


def agreement_figure(outcomes: Mapping[str, Mapping[str, str | None]], path: Path) -> Figure | None:
    """A heatmap of how often two judges give the same outcome (two or more judges only)."""
    if len(outcomes) < 2:
        return None
    from w2s.eval.plots import plot_agreement
    from w2s.eval.stats import agreement

    names, matrix = agreement(outcomes)
    return Figure(plot_agreement(names, matrix, path, title="Judge agreement (share of prompts with the same "
                                 "outcome)"), "Agreement between judges on the same comparison.")


def samples(rows: Sequence[Mapping[str, str]], columns: Sequence[str], caption: str, limit: int = 8,
            chars: int = 1200) -> Samples | None:
    """Up to ``limit`` rows of long texts side by side (each cut at ``chars`` characters)."""
    if not rows:
        return None
    cut = [[(str(r.get(c, "")) if len(str(r.get(c, ""))) <= chars else str(r.get(c, ""))[:chars] + " [...]")
            for c in columns] for r in rows[:limit]]
    return Samples(list(columns), cut, caption)


def _markdown_cell(value: Any) -> str:
    return str("" if value is None else value).replace("|", "\\|").replace("\n", "<br>")


def markdown_table(block: Table | Samples) -> list[str]:
    """A table's lines in Markdown, its caption (in italics) first."""
    lines = [f"*{block.caption}*", ""] if block.caption else []
    lines += ["| " + " | ".join(block.columns) + " |", "|" + "---|" * len(block.columns)]
    return lines + ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block.rows]


def render_markdown(title: str, sections: Sequence[Section], *, subtitle: str = "", base: Path | None = None) -> str:
    """The sections as Markdown; figures are linked relative to ``base`` (the report's folder)."""
    lines = [f"# {title}", ""] + ([subtitle, ""] if subtitle else [])
    for section in sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines += [block.text, ""]
            elif isinstance(block, (Table, Samples)):
                lines += markdown_table(block) + [""]
            elif isinstance(block, Figure) and isinstance(block.png, Path):
                link = block.png.relative_to(base) if base and block.png.is_relative_to(base) else block.png
                lines += [f"![{block.caption}]({link})", ""]
    return "\n".join(lines)


def write_reports(out_dir: Path, title: str, sections: list[Section], *, subtitle: str = "") -> tuple[Path, Path]:
    """``report.html`` (self-contained) and ``report.md`` in ``out_dir``."""
    sections = [s for s in sections if s.blocks]
    html = write_html(out_dir / "report.html", title, sections, subtitle=subtitle)
    md = out_dir / "report.md"
    atomic_write_text(md, render_markdown(title, sections, subtitle=subtitle, base=out_dir))
    return html, md
