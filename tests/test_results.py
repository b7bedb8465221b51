"""Numbers that cannot drift: a README block quoting a results file (`<!-- results: FILE.md -->`) holds only numbers
that file holds; the results file is written by the command that measured them (`w2s bench loop --write`, checked
on a real run in tests/controller/test_loop.py)."""

from __future__ import annotations

from pathlib import Path

from w2s.results import numbers, quoted_blocks, unquotable

ROOT = Path(__file__).resolve().parents[1]


def test_every_number_the_readme_quotes_from_a_results_file_is_in_that_file():
    readme = (ROOT / "README.md").read_text()
    assert unquotable(readme, ROOT) == []


def test_a_quote_that_drifted_from_its_file_is_caught(tmp_path):
    (tmp_path / "r.md").write_text("| held-out | similarity | 60 | +18.3 | [−3.3, +38.3] | 30/19/11 | 0.2 |\n")
    readme = ("Intro 2026.\n<!-- results: r.md -->The Aligner: +18.3% [95% CI -3.3, +38.3] on 60 triples"
              "<!-- /results -->\nafter 7 rounds")
    assert quoted_blocks(readme) == [("r.md", "The Aligner: +18.3% [95% CI -3.3, +38.3] on 60 triples")]
    assert numbers("ω −3.3 and +38.3, 60") == ["-3.3", "38.3", "60"]
    assert unquotable(readme, tmp_path) == ["95 (quoted from r.md)"]  # numbers outside the block are not quotes
    assert unquotable(readme.replace("95% CI ", ""), tmp_path) == []
    drifted = readme.replace("95% CI ", "").replace("+38.3", "+33.3")
    assert unquotable(drifted, tmp_path) == ["33.3 (quoted from r.md)"]


def test_a_results_file_names_no_path_of_this_machine(tmp_path, monkeypatch):
    from w2s.results import _run_dir_named

    checkout = tmp_path / "checkout"
    (checkout / "runs" / "q").mkdir(parents=True)
    monkeypatch.chdir(checkout)
    assert _run_dir_named(checkout / "runs" / "q") == "`runs/q`"  # as the user names it from the checkout
    assert _run_dir_named(tmp_path / "bench-rlhf") == "`bench-rlhf` (outside the checkout)"


def test_the_machine_line_says_whether_the_cpu_computes_bf16_natively():
    """bf16 against float32 speed turns on it (emulated bf16 is far slower): a results file must say which."""
    from w2s.results import bf16_support, machine

    assert bf16_support({"avx2", "fma"}) == "no native bf16"
    assert bf16_support({"avx2", "avx512f", "avx512_bf16"}) == "AVX-512 BF16"
    assert bf16_support({"avx512_bf16", "amx_bf16", "amx_tile"}) == "AMX bf16"
    assert bf16_support(set()) == ""  # not Linux, or no flags line: nothing said
    assert " cores (" in machine() and "GiB memory" in machine()
