"""The loop with vLLM generating and correcting (vLLM's CPU build here, the same code path as on GPUs), through
Ray actors: two rounds of tiny DPO, the answers and corrections checked against what vLLM itself says."""

from __future__ import annotations

import json
import os

import pytest

from tests.controller.test_loop import SMALL, _check_finished_run, w2s
from w2s.data.files import read_jsonl

pytestmark = pytest.mark.slow


def test_two_dpo_rounds_with_vllm_generation_and_correction(tmp_path, tiny_strong, tiny_weak):
    run = tmp_path / "run"
    result = w2s("run", "tiny/dpo", f"run.dir={run}", *SMALL, "generate.backend=vllm", "correct.backend=vllm",
                 "eval.generate.backend=vllm",
                 env={**os.environ})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _check_finished_run(run, 2, "dpo")
    for k in (1, 2):
        answers = read_jsonl(run / f"round-{k:02d}" / "generate" / "answers.jsonl")
        corrections = read_jsonl(run / f"round-{k:02d}" / "correct" / "corrections.jsonl")
        assert len(answers) == len(corrections) == 4
        # vLLM's own token counts and stop reasons reach the run directory; a random tiny model never stops by
        # itself within 12 tokens, so every answer ran to the limit.
        assert all(a["completion_tokens"] == 12 and a["finish_reason"] == "length" for a in answers), answers
    # Every generate, correct and evaluation stage was served by vLLM's engine (recorded in its manifest).
    for k in (1, 2):
        for stage in ("generate", "eval-answers"):
            manifest = json.loads((run / f"round-{k:02d}" / stage / "manifest.json").read_text())
            assert manifest["provenance"]["engine"]["class"] == "VLLMGenerator", manifest["provenance"]
        correct = json.loads((run / f"round-{k:02d}" / "correct" / "manifest.json").read_text())
        assert correct["provenance"]["generation"]["backend"] == "vllm"
