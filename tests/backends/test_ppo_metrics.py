"""PPO's figures read back from OpenRLHF's TensorBoard events: every step once across a resumed start, the round's
summary, and its one-line description."""

from __future__ import annotations

import os

import pytest

from w2s.backends.ppo_metrics import describe, read_steps, summarise
from w2s.metrics_sinks import TensorBoardSink


def _start(folder, steps: dict[int, dict[str, float]], mtime: float) -> None:
    """One start of OpenRLHF's PPO trainer: its own folder of events, the ``train/`` scalars of each step."""
    sink = TensorBoardSink(folder)
    for step, values in steps.items():
        sink.log({f"train/{k}": v for k, v in values.items()} | {"eval/ignored": 1.0}, step)
    for f in folder.iterdir():
        os.utime(f, (mtime, mtime))


def _step(reward: float, loss: float) -> dict[str, float]:
    return {"reward": reward, "policy_loss": loss, "kl": 0.01, "critic_loss": 1.0, "response_length": 16.0,
            "rollout/num_samples": 4.0, "rollout/response_length_mean": 16.0, "timing/generation": 0.5,
            "timing/ppo_train": 2.0, "timing/broadcast": 0.25, "timing/step_total": 3.0}


def test_a_resumed_start_replaces_the_steps_it_logged_again(tmp_path):
    _start(tmp_path / "ppo_1206T20:56", {1: _step(-1.0, 0.5), 2: _step(-0.9, 0.4)}, mtime=1000)
    _start(tmp_path / "ppo_1206T21:10", {2: _step(-0.5, 0.3), 3: _step(-0.25, 0.2)}, mtime=2000)  # from step 1's
    steps = read_steps(tmp_path)
    assert [s["step"] for s in steps] == [1.0, 2.0, 3.0]
    assert [s["reward"] for s in steps] == [-1.0, -0.5, -0.25]
    assert all("ignored" not in s and "eval/ignored" not in s for s in steps)

    figures = summarise(steps)
    assert figures["ppo_steps"] == 3
    assert (figures["ppo_reward_first"], figures["ppo_reward_last"]) == (-1.0, -0.25)
    assert figures["ppo_reward_mean"] == pytest.approx(-1.75 / 3)
    assert figures["ppo_policy_loss_last"] == pytest.approx(0.2)
    assert figures["ppo_weight_sync_s_per_step"] == pytest.approx(0.25)
    assert figures["ppo_rollout_tokens_per_s"] == pytest.approx(3 * 4 * 16 / 1.5)  # tokens over rollout seconds
    assert figures["ppo_train_samples_per_s"] == pytest.approx(12 / 6.0)
    line = describe(figures)
    assert line.startswith("3 steps, reward -1 -> -0.25, policy loss 0.5 -> 0.2") and "128 tokens/s" in line


def test_no_events_is_no_steps(tmp_path):
    assert read_steps(tmp_path) == []
    assert summarise([]) == {"ppo_steps": 0} and describe({"ppo_steps": 0}) == "no PPO step was logged"
