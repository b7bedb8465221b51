"""A self-contained HTML report: tables, figures, prose and side-by-side samples in one file.

A run directory gets copied to a laptop, attached to a paper review or opened years later, often offline, so the
report must render from the file alone: figures are embedded as ``data:`` URIs, the CSS is inline, there are no
web fonts, scripts or links to anything outside the page (a Content-Security-Policy says so to the browser too).
Every piece of text is HTML-escaped: model answers contain ``<script>`` and the like and must be shown, not run.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from w2s.data.files import atomic_write_text


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]  # cells: str / int / float / None
    caption: str = ""


@dataclass
class Figure:
    png: Path | bytes
    caption: str = ""


@dataclass
class Text:
    text: str  # blank lines split paragraphs


@dataclass
class Samples:
    columns: list[str]
    rows: list[list[str]]  # long texts side by side, e.g. prompt | answer | correction | new answer
    caption: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Table | Figure | Text | Samples]


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_FONT = ('system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans", "Liberation Sans", '
         "Arial, sans-serif")
_CSS = f"""
:root {{ color-scheme: light; }}
body {{ font-family: {_FONT}; font-size: 15px; line-height: 1.5; color: #1b1b1b; background: #fff;
  max-width: 1100px; margin: 2rem auto; padding: 0 1.5rem; }}
h1 {{ font-size: 1.7rem; margin: 0 0 .2rem; }}
h2 {{ font-size: 1.3rem; margin: 2.2rem 0 .8rem; padding-bottom: .25rem; border-bottom: 1px solid #ddd; }}
.subtitle {{ color: #555; margin: 0 0 1.2rem; }}
a {{ color: #2a4d8f; text-decoration: none; }} a:hover {{ text-decoration: underline; }}
nav.toc {{ background: #f6f7f9; border: 1px solid #e3e5e8; border-radius: 6px; padding: .6rem 1.2rem; }}
nav.toc h2 {{ font-size: 1rem; margin: 0 0 .3rem; border: 0; padding: 0; }}
nav.toc ol {{ margin: 0; padding-left: 1.4rem; }}
p {{ margin: .5rem 0; max-width: 48rem; }}
table {{ border-collapse: collapse; margin: .8rem 0 1.4rem; font-size: .93rem; }}
caption {{ caption-side: top; text-align: left; font-weight: 600; padding-bottom: .35rem; color: #333; }}
th, td {{ padding: .3rem .75rem; text-align: left; vertical-align: top; }}
thead th {{ border-top: 1.5px solid #222; border-bottom: 1px solid #222; font-weight: 600; }}
tbody tr:last-child td {{ border-bottom: 1.5px solid #222; }}
tbody tr:nth-child(even) {{ background: #fafafa; }}
.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
td.none {{ color: #999; }}
figure {{ margin: 1rem 0 1.6rem; }}
figure img {{ max-width: 100%; height: auto; border: 1px solid #eee; }}
figcaption {{ color: #444; font-size: .9rem; margin-top: .3rem; }}
table.samples {{ width: 100%; table-layout: fixed; }}
table.samples td {{ border-bottom: 1px solid #e3e3e3; padding: .45rem .6rem; }}
table.samples td + td, table.samples th + th {{ border-left: 1px solid #ececec; }}
.cell {{ white-space: pre-wrap; overflow-wrap: anywhere; max-height: 18rem; overflow: auto; font-size: .88rem; }}
@media print {{
  body {{ max-width: none; margin: 0; padding: 0; font-size: 10.5pt; }}
  nav.toc {{ background: none; }} a {{ color: inherit; }}
  h2 {{ break-after: avoid; }} table, figure {{ break-inside: avoid; }}
  table.samples {{ break-inside: auto; }} table.samples tr {{ break-inside: avoid; }}
  .cell {{ max-height: none; overflow: visible; }}
  tbody tr:nth-child(even) {{ background: none; }}
}}
@page {{ margin: 1.6cm; }}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _fmt(value: Any, digits: int | None) -> str:
    """A cell as text; floats get the column's number of decimals (``None``: 3 significant digits)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.3g}" if digits is None else f"{value:,.{digits}f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)


def _digits(values: list[Any]) -> int | None:
    """Decimals for a column's floats, chosen by their largest magnitude so the points line up."""
    top = max((abs(v) for v in values if isinstance(v, float) and math.isfinite(v)), default=0.0)
    return None if top >= 1e6 or 0 < top < 1e-2 else 1 if top >= 100 else 2 if top >= 1 else 3


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _caption(text: str) -> str:
    return f"<caption>{escape(text)}</caption>" if text else ""


def _table(block: Table) -> str:
    ncol = len(block.columns)
    if any(len(r) > ncol for r in block.rows):
        raise ValueError(f"Table {block.caption!r}: a row has more cells than the {ncol} columns")
    cols = [[r[i] if i < len(r) else None for r in block.rows] for i in range(ncol)]
    numeric = [any(map(_is_num, c)) and all(_is_num(v) or v is None for v in c) for c in cols]
    digits = [_digits(c) for c in cols]

    def cell(tag: str, text: str, *classes: str) -> str:
        cls = " ".join(c for c in classes if c)
        return f'<{tag} class="{cls}">{escape(text)}</{tag}>' if cls else f"<{tag}>{escape(text)}</{tag}>"

    head = "".join(cell("th", c, "num" if n else "") for c, n in zip(block.columns, numeric))
    body = "".join(
        "<tr>" + "".join(cell("td", _fmt(cols[i][j], digits[i]), "num" if numeric[i] else "",
                              "none" if cols[i][j] is None else "") for i in range(ncol)) + "</tr>"
        for j in range(len(block.rows))
    )
    return f"<table>{_caption(block.caption)}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(block: Figure) -> str:
    data = block.png if isinstance(block.png, bytes) else Path(block.png).read_bytes()
    if not data.startswith(_PNG_MAGIC):
        raise ValueError(f"Figure: not a PNG ({block.png if not isinstance(block.png, bytes) else 'bytes'})")
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{escape(block.caption)}</figcaption>" if block.caption else ""
    return f'<figure><img src="{uri}" alt="{escape(block.caption or "figure")}">{cap}</figure>'


def _text(block: Text) -> str:
    paras = [p.strip() for p in re.split(r"\n\s*\n", block.text) if p.strip()]
    return "".join(f"<p>{escape(p)}</p>" for p in paras)


def _samples(block: Samples) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in block.columns)
    body = "".join(
        "<tr>" + "".join(f'<td><div class="cell">{escape(str(c))}</div></td>' for c in row) + "</tr>"
        for row in block.rows
    )
    return (f'<table class="samples">{_caption(block.caption)}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


_RENDER = {Table: _table, Figure: _figure, Text: _text, Samples: _samples}


def _anchor(i: int, title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40]
    return f"s{i}-{slug}" if slug else f"s{i}"


def render_html(title: str, sections: list[Section], *, subtitle: str = "") -> str:
    """The whole report as one HTML document, with a table of contents linking to each section."""
    anchors = [_anchor(i + 1, s.title) for i, s in enumerate(sections)]
    toc = "".join(f'<li><a href="#{a}">{escape(s.title)}</a></li>' for a, s in zip(anchors, sections))
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{escape(title)}</h1>",
        f'<p class="subtitle">{escape(subtitle)}</p>' if subtitle else "",
        "</header>",
        f'<nav class="toc"><h2>Contents</h2><ol>{toc}</ol></nav>' if sections else "",
    ]
    for anchor, section in zip(anchors, sections):
        parts.append(f'<section id="{anchor}"><h2>{escape(section.title)}</h2>')
        for block in section.blocks:
            render = _RENDER.get(type(block))
            if render is None:
                raise TypeError(f"render_html: unknown block {type(block).__name__} in section {section.title!r}")
            parts.append(render(block))
        parts.append("</section>")
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)


def write_html(path: Path, title: str, sections: list[Section], *, subtitle: str = "") -> Path:
    """Render and write atomically (readers see the old report or the new one); returns ``path``."""
    path = Path(path)
    atomic_write_text(path, render_html(title, sections, subtitle=subtitle))
    return path
