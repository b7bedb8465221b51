from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import w2s.eval.html as report
from w2s.eval.html import Figure, Samples, Section, Table, Text, render_html, write_html
from w2s.eval.plots import plot_agreement, plot_omega

CHROMIUM = "/usr/bin/chromium"
INJECTED = "Sure: <script>alert(1)</script> & <b>bold</b> <img src=x onerror=alert(2)>"
C0_BLUE = (31, 119, 180)  # matplotlib's first line colour (plot_omega's first series)
VIRIDIS_TOP = (253, 231, 37)  # agreement 1.0 (the heatmap's diagonal)


class _Collect(HTMLParser):
    """Tags, link-like attributes, <style> text and the text of each sample cell."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.refs: list[str] = []
        self.css = ""
        self.cells: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action", "poster", "data")]
        if tag == "style":
            self._in = "style"
        elif tag == "div" and a.get("class") == "cell":
            self._in = "cell"
            self.cells.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "div"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.css += data
        elif self._in == "cell":
            self.cells[-1] += data


def _parse(text: str) -> _Collect:
    p = _Collect()
    p.feed(text)
    p.close()
    return p


def _omega_points() -> list[dict]:
    pts = []
    for series, base in (("harmlessness vs initial", 5.0), ("helpfulness vs initial", -3.0)):
        for r in (1, 2, 3):
            omega = base + 6.0 * r
            ci = (None, None) if (series, r) == ("helpfulness vs initial", 3) else (omega - 9.0, omega + 8.0)
            pts.append({"round": r, "series": series, "omega": omega, "ci_low": ci[0], "ci_high": ci[1]})
    return pts


def _sections(tmp_path: Path) -> list[Section]:
    omega = plot_omega(_omega_points(), tmp_path / "omega.png", title="ω per round")
    agree = plot_agreement(["reward-model", "llm-judge", "rule"], [[1.0, 0.82, 0.61], [0.82, 1.0, None],
                                                                   [0.61, None, 1.0]], tmp_path / "agree.png")
    return [
        Section("Plots", [Figure(omega, "ω per round, 95% CI"), Figure(agree.read_bytes(), "judge agreement")]),
        Section("Summary & numbers", [
            Text("Three rounds.\n\nSecond <paragraph> & more."),
            Table(["round", "judge", "ω (%)", "N"], [[1, "rm", 12.5, 96], [2, "rm", -3.25, None]], caption="ω"),
        ]),
        Section("Samples", [Samples(["prompt", "answer", "correction"], [["Q?", INJECTED, "Better.\n  indented"]])]),
    ]


def test_every_block_type_rendered_and_escaped(tmp_path):
    html = render_html("Run <1>", _sections(tmp_path), subtitle="Generated at 2026-01-01 00:00 UTC")
    p = _parse(html)
    assert "<script" not in html and "Run &lt;1&gt;" in html and "Generated at 2026-01-01" in html
    assert p.tags.count("img") == 2 and "b" not in p.tags and "paragraph" not in p.tags
    assert p.cells == ["Q?", INJECTED, "Better.\n  indented"]  # shown verbatim, whitespace kept
    assert html.count("<p>") >= 2 and "Second &lt;paragraph&gt; &amp; more." in html
    assert '<td class="num">12.50</td>' in html and '<td class="num">-3.25</td>' in html
    assert '<td class="num none">—</td>' in html
    # The table of contents links to each section's anchor.
    anchors = [r[1:] for r in p.refs if r.startswith("#")]
    assert len(anchors) == 3 and all(f'id="{a}"' in html for a in anchors)


def test_no_external_references(tmp_path):
    p = _parse(render_html("r", _sections(tmp_path)))
    assert p.refs
    for ref in p.refs:
        assert ref.startswith("#") or ref.startswith("data:image/png;base64,"), ref[:80]
    css = p.css.lower()
    assert css.strip() and "url(" not in css and "@import" not in css and "@font-face" not in css
    assert "script" not in p.tags and "link" not in p.tags


def test_write_html_is_atomic(tmp_path, monkeypatch):
    calls = []
    real = report.atomic_write_text
    monkeypatch.setattr(report, "atomic_write_text", lambda path, text: (calls.append(path), real(path, text)))
    out = write_html(tmp_path / "sub" / "report.html", "t", [Section("s", [Text("hi")])], subtitle="now")
    assert calls == [out] and out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [f.name for f in out.parent.iterdir()] == ["report.html"]  # no temporary left behind


def test_plot_omega_two_series_with_a_missing_ci(tmp_path):
    out = plot_omega(_omega_points(), tmp_path / "o.png")
    assert out == tmp_path / "o.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # the figure was closed


def test_bad_inputs_rejected(tmp_path):
    with pytest.raises(ValueError):
        plot_agreement(["a", "b"], [[1.0]], tmp_path / "a.png")
    with pytest.raises(ValueError):
        render_html("t", [Section("s", [Figure(b"not a png")])])


def _chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--window-size=1200,2400", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)


def _colour_pixels(png: Path, rgb: tuple[int, int, int], tol: int = 30) -> int:
    import matplotlib.image
    import numpy as np

    img = matplotlib.image.imread(png)
    pixels = img[..., :3] * 255 if img.dtype.kind == "f" else img[..., :3].astype(float)
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) <= tol).sum())


@pytest.mark.slow  # headless Chromium
def test_renders_in_a_real_browser(tmp_path):
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} missing: apt-get install chromium")
    page = write_html(tmp_path / "report.html", "Run", _sections(tmp_path), subtitle="Generated at now")

    # The injected markup is text in the browser's DOM: no script, bold or image element came from it.
    dom = _chromium(tmp_path, page, "--dump-dom").stdout
    p = _parse(dom)
    assert p.cells == ["Q?", INJECTED, "Better.\n  indented"]
    assert "script" not in p.tags and "b" not in p.tags and p.tags.count("img") == 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom

    shot = tmp_path / "shot.png"
    _chromium(tmp_path, page, f"--screenshot={shot}")
    assert _colour_pixels(shot, (255, 255, 255), tol=15) < 0.97 * 1200 * 2400  # not blank
    assert _colour_pixels(shot, C0_BLUE) > 1000  # the ω plot's first series
    assert _colour_pixels(shot, VIRIDIS_TOP) > 5000  # the agreement heatmap's diagonal

    # Control: with the images' data broken the same page shows neither colour, so the checks above test the images.
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text(encoding="utf-8").replace(";base64,", ";base64,AAAA"), encoding="utf-8")
    _chromium(tmp_path, broken, f"--screenshot={shot}")
    assert _colour_pixels(shot, C0_BLUE) < 200 and _colour_pixels(shot, VIRIDIS_TOP) < 200
