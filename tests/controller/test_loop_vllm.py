"""The loop with vLLM generating and correcting (vLLM's CPU build here, the same code path as on GPUs), through
Ray actors: two rounds of tiny DPO, the answers and corrections checked against what vLLM itself says."""

from __future__ import annotations

import json
import os

import pytest

from tests.controller.test_loop import SMALL, _check_finished_run, w2s
from w2s.data.files import read_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_two_dpo_rounds_with_vllm_generation_and_correction(tmp_path, tiny_strong, tiny_weak):
    run = tmp_path / "run"
    # Eager engines start in about half the time, which is what a short test wants (the evaluation answers stay
    # on transformers: three more engine start-ups would test nothing new). Small KV caches: the default (a quarter
    # of the free memory, up to 4 GiB each) would take 8 GiB for two engines while other tests run beside this one.
    result = w2s("run", "tiny/dpo", f"run.dir={run}", *SMALL, "generate.backend=vllm", "correct.backend=vllm",
                 "generate.enforce_eager=true", "correct.enforce_eager=true", "generate.kv_cache_gib=0.25",
                 "correct.kv_cache_gib=0.25", "cluster.num_cpus=6", env={**os.environ})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    _check_finished_run(run, 2, "dpo")
    # One vLLM engine for both rounds' answers: round 2's policy went into it in place (vLLM's reload_weights).
    placements = json.loads((run / "cluster.json").read_text())["actors"]
    assert [a["role"] for a in placements].count("generator") == 2  # the vLLM engine and the evaluation's
    assert result.stdout.count("generator: took") == 3, result.stdout
    for k in (1, 2):
        answers = read_jsonl(run / f"round-{k:02d}" / "generate" / "answers.jsonl")
        corrections = read_jsonl(run / f"round-{k:02d}" / "correct" / "corrections.jsonl")
        assert len(answers) == len(corrections) == 4
        # vLLM's own token counts and stop reasons reach the run directory: an answer that ran to the limit has
        # exactly 12 tokens, one that stopped at EOS (a random model's chance draw) fewer.
        for a in answers:
            assert a["finish_reason"] in ("length", "stop") and 1 <= a["completion_tokens"] <= 12, a
            assert (a["finish_reason"] == "length") == (a["completion_tokens"] == 12), a
        assert all(c["correction_finish_reason"] in ("length", "stop", "template_echo") for c in corrections)
    # Every generate and correct stage was served by vLLM's engine (recorded in its manifest), the evaluation
    # answers by transformers.
    for k in (1, 2):
        def manifest(stage: str, k: int = k) -> dict:
            return json.loads((run / f"round-{k:02d}" / stage / "manifest.json").read_text())

        assert manifest("generate")["provenance"]["engine"]["class"] == "VLLMGenerator"
        assert manifest("eval-answers")["provenance"]["engine"]["class"] == "HFGenerator"
        assert manifest("correct")["provenance"]["generation"]["backend"] == "vllm"
