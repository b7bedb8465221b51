"""The judge panel writes every verdict before any statistic is computed, and its statistics hold at paper scale
(thousands of prompts, where a sign test in floats once overflowed and lost the judging)."""

from __future__ import annotations

import contextlib
import json

import pytest

from w2s.aligner.cli import compose
from w2s.data.files import read_jsonl
from w2s.data.prompts import Prompt
from w2s.eval import cli as eval_cli
from w2s.eval import panel


class ScoreWorkers:
    """The judge role's score method, as its workers answer it: here the answer's length is its score."""

    def score(self, triples, what=""):
        return [float(len(answer)) for _, answer, _ in triples]


class Judges:
    @contextlib.contextmanager
    def open(self, name, cfg):
        yield ScoreWorkers()


class Services:
    judges = Judges()


def _run(tmp_path, n):
    cfg = compose(None, ["eval.judges.similarity.tie_margin=0"], job="eval")
    prompts = [Prompt(id=f"p{i}", prompt=f"question {i}") for i in range(n)]
    candidate = {p.id: "a longer answer" for p in prompts}
    baseline = {p.id: "short" for p in prompts}
    return eval_cli.evaluate_and_report(cfg, prompts, candidate, baseline, ("cand", "base"), tmp_path,
                                        lambda: Services())


def test_eval_of_1100_prompts_the_candidate_always_wins(tmp_path):
    assert _run(tmp_path, 1100) == 0
    s = json.loads((tmp_path / "summary.json").read_text())["judges"]["similarity"]
    assert (s["wins"], s["losses"], s["omega"]) == (1100, 0, 100.0)
    assert 0.0 <= s["p_value"] < 1e-300  # 2 / 2 ** 1100: below the smallest float, not an OverflowError
    assert len(read_jsonl(tmp_path / "outcomes.jsonl")) == 1100


def test_a_failing_summary_loses_no_judging(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("summary failed")

    monkeypatch.setattr(panel, "summarize", broken)
    with pytest.raises(RuntimeError, match="summary failed"):
        _run(tmp_path, 30)
    outcomes = read_jsonl(tmp_path / "outcomes.jsonl")
    assert [(r["judge"], r["outcome"]) for r in outcomes] == [("similarity", "win")] * 30
    assert not (tmp_path / "summary.json").exists()
