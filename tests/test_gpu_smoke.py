"""The GPU smoke path under pytest (`pytest -m gpu` on a CUDA machine; skipped, by tests/conftest.py, without one):
one round of gpu/smoke with vLLM generation and correction, flash-attention 2 and ZeRO-3 DPO, then the RLHF round
(reward model, one PPO step through OpenRLHF's train_ppo_ray). scripts/gpu_smoke.sh runs the same and more."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.mark.parametrize("method", ["dpo", "rlhf"])
def test_a_gpu_smoke_round(tmp_path, method):
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "w2s.cli", "run", "gpu/smoke", f"run.dir={run}",
                             f"train.method={method}", "cluster.address="], capture_output=True, text=True,
                            timeout=3000, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    generate = json.loads((run / "round-01" / "generate" / "manifest.json").read_text())
    assert generate["provenance"]["engine"]["backend"] == "vllm"
    train = json.loads((run / "round-01" / "train" / "manifest.json").read_text())
    assert train["metrics"]["steps"] >= 1  # under RLHF the reward model's
    if method == "rlhf":  # PPO's own steps, finite
        assert train["metrics"]["ppo_steps"] >= 1 and abs(train["metrics"]["ppo_reward_last"]) < 1e6
    policy = run / "round-01" / "train" / "policy"
    assert (policy / "config.json").is_file() and any(policy.glob("*.safetensors"))
    # gpu/smoke colocates generator, corrector and trainer on the one GPU: one process each, all on GPU 0, taking
    # turns (the trainer's turn put the engines to sleep).
    actors = [a for a in json.loads((run / "cluster.json").read_text())["actors"] if a["role"] != "judge"]
    if method == "dpo":
        assert sorted(a["role"] for a in actors) == ["corrector", "generator", "trainer"]
        assert {a["pool_bundles"][0] for a in actors} == {0} and len({tuple(a["gpu_ids"]) for a in actors}) == 1
        assert ["generator", "sleep"] in train["services"]["turns"]
