"""``w2s aligner correct --backend vllm``: a file corrected on a real vLLM engine (its CPU build here), in the
corrector actor, with vLLM's own counts and stop reasons in each row's provenance. (Resuming a file is the same
code whatever the engine: ``tests/aligner/test_correct.py`` covers it.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]

ROWS = [{"id": f"r{i}", "question": f"What is {i} plus 1?", "answer": f"It is {i + 3}."} for i in range(6)]


def test_correct_a_file_on_vllm(tmp_path, tiny_weak):
    src, out = tmp_path / "answers.jsonl", tmp_path / "corrected.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    base = [sys.executable, "-m", "w2s.cli", "aligner", "correct", "--aligner", tiny_weak, "--input", str(src),
            "--output", str(out), "--backend", "vllm", "--template", "aligner-v2", "--no-progress",
            "correct.max_new_tokens=8", "correct.enforce_eager=true", "correct.kv_cache_gib=0.25",
            "model.aligner.dtype=float32"]
    result = subprocess.run(base, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 new, 0 resumed" in result.stdout
    assert (out.parent / "logs" / "corrector-0.log").exists()  # corrected in the corrector actor
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in ROWS]
    for r in rows:
        prov = r["w2s_correction"]
        assert prov["generation"]["backend"] == "vllm"
        # vLLM's own counts and stop reasons: a completion that ran to the limit has exactly 8 tokens, one that
        # stopped at EOS (a random model's chance draw) fewer.
        assert prov["finish_reason"] in ("length", "stop", "template_echo"), prov
        assert 1 <= prov["completion_tokens"] <= 8
        assert (prov["finish_reason"] == "length") <= (prov["completion_tokens"] == 8)
        assert (prov["finish_reason"] == "stop") <= (prov["completion_tokens"] < 8)
