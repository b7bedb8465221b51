"""The quickstart's evaluation sets: its dev set (what its triples and training settings were chosen on,
recipes/quickstart-dev.yaml) and its test set (what `w2s run quickstart` reports, declared `eval.role: test`),
disjoint from each other and from everything the run trains on."""

from __future__ import annotations

from collections import Counter

from w2s.config.compose import load_config
from w2s.controller.overlap import check_overlap
from w2s.data.files import read_jsonl
from w2s.data.prompts import read_prompts
from w2s.data.text import normalize_text

DATA = "recipes/data/quickstart"


def test_the_quickstart_reports_on_its_test_set_and_its_dev_recipe_on_the_dev_set():
    test, dev = load_config("quickstart"), load_config("quickstart-dev")
    assert (test.eval.role, test.eval.prompts.path) == ("test", f"{DATA}/test.jsonl")
    assert (dev.eval.role, dev.eval.prompts.path) == ("dev", f"{DATA}/dev.jsonl")
    # Everything but the evaluation set (and the run directory) is the same run.
    assert test.aligner == dev.aligner and test.train == dev.train and test.loop == dev.loop


def test_the_test_set_shares_no_question_with_the_dev_set_the_loop_or_the_triples():
    texts = {name: {normalize_text(r.get("prompt") or r["question"]) for r in read_jsonl(f"{DATA}/{name}.jsonl")}
             for name in ("test", "dev", "prompts", "triples")}
    for other in ("dev", "prompts", "triples"):
        assert not texts["test"] & texts[other], other
    rows = read_jsonl(f"{DATA}/test.jsonl")
    assert len(texts["test"]) == len(rows) == 48 and all(r["reference"].strip() for r in rows)
    assert Counter(r["category"] for r in rows) == {"harmful": 12, "factual": 12, "empathy": 12, "general": 12}
    cfg = load_config("quickstart")  # the run's own check before anything starts finds nothing either
    loop = read_prompts(cfg.loop.prompts, with_reference=False, what="loop.prompts")
    tests = read_prompts(cfg.eval.prompts, with_reference=True, what="eval.prompts")
    assert check_overlap(cfg, loop, tests) == {"overlap_loop_prompts": 0, "overlap_aligner_questions": 0}
