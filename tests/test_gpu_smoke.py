"""The GPU smoke path under pytest (`pytest -m gpu` on a CUDA machine; skipped, by tests/conftest.py, without one):
two rounds of gpu/smoke with vLLM generation and correction, flash-attention 2 and ZeRO-3 DPO, the roles colocated
on one GPU, then the RLHF round (reward model, one PPO step through OpenRLHF's train_ppo_ray).
scripts/gpu_smoke.sh runs these with W2S_GPU_SMOKE_OUT set, and shows each run's status after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.mark.parametrize("method", ["dpo", "rlhf"])
def test_a_gpu_smoke_round(tmp_path, method):
    run = Path(os.environ.get("W2S_GPU_SMOKE_OUT") or tmp_path) / method
    # Two DPO rounds: the second shows on a real GPU what the first cannot (new weights read into engines that slept
    # without them, the kept reference); one RLHF round (PPO takes the GPU itself).
    rounds = 2 if method == "dpo" else 1
    result = subprocess.run([sys.executable, "-m", "w2s.cli", "run", "gpu/smoke", f"run.dir={run}",
                             f"train.method={method}", f"loop.rounds={rounds}", "cluster.address="],
                            capture_output=True, text=True, timeout=3000, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    manifest = lambda where: json.loads((run / where / "manifest.json").read_text())  # noqa: E731
    generate = manifest("round-01/generate")
    assert generate["provenance"]["engine"]["backend"] == "vllm"
    train = manifest("round-01/train")
    assert train["metrics"]["steps"] >= 1  # under RLHF the reward model's
    # Packed micro-batches on flash-attention 2 (varlen) give the padded rows' outputs, in bf16 (the policy's, or
    # the reward model's).
    assert train["metrics"]["train_packing_difference"] <= 0.15
    if method == "rlhf":  # PPO's own steps, finite, on packed micro-batches too (OpenRLHF's parsed flags say so)
        assert train["metrics"]["ppo_steps"] >= 1 and abs(train["metrics"]["ppo_reward_last"]) < 1e6
        assert "packing_samples=True" in (run / "round-01" / "train" / "ppo.log").read_text()
    policy = run / "round-01" / "train" / "policy"
    assert (policy / "config.json").is_file() and any(policy.glob("*.safetensors"))
    # gpu/smoke colocates generator, corrector and trainer on the one GPU: one process each, all on GPU 0, taking
    # turns (the corrector's put the generator to sleep without its weights, the trainer's the corrector).
    actors = [a for a in json.loads((run / "cluster.json").read_text())["actors"] if a["role"] != "judge"]
    if method == "dpo":
        assert sorted(a["role"] for a in actors) == ["corrector", "generator", "trainer"]
        assert {a["pool_bundles"][0] for a in actors} == {0} and len({tuple(a["gpu_ids"]) for a in actors}) == 1
        turns = [t for p in run.glob("round-01/*/manifest.json") for t in manifest(p.parent.relative_to(run))[
            "services"]["turns"]]
        assert ["generator", "discard"] in turns and ["corrector", "sleep"] in turns
        # Round 2 on the GPU: no role started; the generator slept keeping no weights (vLLM level 2) and took the
        # round-1 policy in place, its bf16 engine passing the refit check against the trainer's numbers; the
        # ZeRO-3 reference, offloaded, was kept through the turns.
        assert all(not manifest(p.parent.relative_to(run))["services"]["started"]
                   for p in run.glob("round-02/*/manifest.json"))
        assert manifest("round-02/correct")["services"]["turns"][0] == ["generator", "discard"]
        [refit] = manifest("round-01/eval-answers")["services"]["refits"]
        assert refit["role"] == "generator" and refit["checked"] and refit["mean_abs_diff"] <= refit["tolerance"]
        assert manifest("round-02/train")["metrics"]["train_reference_reused"] == 1
