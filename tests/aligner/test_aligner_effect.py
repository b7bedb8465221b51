"""The quickstart's Aligner (SmolLM2-135M, LoRA) corrects answers it never saw better than copying them would.

A broken implementation (the prompt not masked out of the loss, a template at correction time other than the
one trained on, a warm-up that overwrites the corrections) copies, rambles or echoes the template, and lands at
or below zero; a working one moves held-out corrections clearly towards the references.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from w2s.data.files import read_jsonl, write_jsonl

# Measured on the 2-core machine: see the assertion's message. A broken Aligner scores <= 0.
MIN_OMEGA = 20.0


@pytest.mark.slow
def test_quickstart_aligner_beats_copying_on_held_out_questions(tmp_path, smollm2):
    # 120 of the quickstart triples (30 per category, both kinds of answer), 24 whole questions held out.
    triples = read_jsonl("recipes/data/quickstart/triples.jsonl")[:120]
    data = tmp_path / "triples.jsonl"
    write_jsonl(data, triples)
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "w2s.cli", "bench", "aligner", "--recipe", "quickstart", "--json", "--output",
           str(out), f"aligner.train.data.path={data}", f"model.aligner.path={smollm2}", f"model.strong.path={smollm2}",
           "eval.max_prompts=8", "eval.generate.max_new_tokens=64"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = {r["set"]: r for r in json.loads(next(line for line in reversed(result.stdout.splitlines())
                                                  if line.startswith("[")))}
    heldout = rows["held-out triples"]
    assert heldout["n"] == 24
    assert heldout["omega"] >= MIN_OMEGA, heldout
    assert heldout["copy_rate"] < 0.5 and heldout["cut_off_rate"] < 0.05, heldout
