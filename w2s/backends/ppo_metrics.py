"""What a PPO run measured, read back from the TensorBoard events OpenRLHF's PPO trainer writes
(``--logger.tensorboard_dir``: one folder per start, ``ppo_<time>``, under the round's directory).

OpenRLHF logs every step's scalars under ``train/``: the policy and critic losses, KL, reward, response length,
and timings (``timing/generation``, ``timing/ppo_train``, ``timing/broadcast`` the weight sync). A PPO resumed
from its checkpoint starts a new folder and logs the steps after the checkpoint again; the later start's value of
a step wins, so the figures cover the whole training once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

# Beside the train stage's outputs: one row per weight sync inside the rollout engine (CPU runs, w2s.compat.ppo).
SYNC_LOG = "weight_sync.jsonl"

# The figures a round's metrics row and the report carry (OpenRLHF's tag under train/ -> w2s's name).
SUMMARISED = {"policy_loss": "policy_loss", "critic_loss": "critic_loss", "kl": "kl", "reward": "reward",
              "response_length": "response_length"}
TIMINGS = {"timing/generation": "rollout_s", "timing/ppo_train": "train_s", "timing/broadcast": "weight_sync_s",
           "timing/step_total": "step_s"}


def read_steps(tensorboard_dir: str | Path) -> list[dict[str, float]]:
    """Every PPO step's ``train/`` scalars (``step`` included), in step order, from all starts under the folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    by_step: dict[int, dict[str, float]] = {}
    files = sorted(Path(tensorboard_dir).glob("*/events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)
    for path in files:  # oldest first: a resumed start's steps replace the first start's
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            if tag.startswith("train/"):
                for e in events.Scalars(tag):
                    by_step.setdefault(int(e.step), {"step": float(e.step)})[tag[len("train/"):]] = float(e.value)
    return [by_step[s] for s in sorted(by_step)]


def read_syncs(stage_dir: str | Path) -> list[dict[str, Any]]:
    """The engine's weight syncs of a train stage (:data:`SYNC_LOG`; none on GPUs, where OpenRLHF's own extension
    receives them)."""
    log = Path(stage_dir) / SYNC_LOG
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def summarise(steps: list[dict[str, float]]) -> dict[str, Any]:
    """A round's PPO figures: ``ppo_steps``; first, last and mean of each of :data:`SUMMARISED`; the mean seconds
    per step of each of :data:`TIMINGS`; rollout tokens/s and training samples/s over the whole PPO."""
    out: dict[str, Any] = {"ppo_steps": len(steps)}
    for tag, name in SUMMARISED.items():
        values = [s[tag] for s in steps if tag in s]
        if values:
            out.update({f"ppo_{name}_first": values[0], f"ppo_{name}_last": values[-1],
                        f"ppo_{name}_mean": math.fsum(values) / len(values)})
    for tag, name in TIMINGS.items():
        values = [s[tag] for s in steps if tag in s]
        if values:
            out[f"ppo_{name}_per_step"] = math.fsum(values) / len(values)
    samples = [s.get("rollout/num_samples", 0.0) for s in steps]
    tokens = math.fsum(n * s.get("rollout/response_length_mean", 0.0) for n, s in zip(samples, steps))
    rollout_s = math.fsum(s.get("timing/generation", 0.0) for s in steps)
    train_s = math.fsum(s.get("timing/ppo_train", 0.0) for s in steps)
    if rollout_s > 0:
        out["ppo_rollout_tokens_per_s"] = tokens / rollout_s
    if train_s > 0:
        out["ppo_train_samples_per_s"] = math.fsum(samples) / train_s
    return out


def describe(figures: dict[str, Any]) -> str:
    """One line of :func:`summarise`'s figures: steps, reward, policy loss and KL first -> last, the speeds."""
    if not figures.get("ppo_steps"):
        return "no PPO step was logged"
    parts = [f"{figures['ppo_steps']} steps"]
    for name in ("reward", "policy_loss", "kl"):
        if f"ppo_{name}_first" in figures:
            parts.append(f"{name.replace('_', ' ')} {figures[f'ppo_{name}_first']:.4g} -> "
                         f"{figures[f'ppo_{name}_last']:.4g}")
    if "ppo_rollout_tokens_per_s" in figures:
        parts.append(f"rollouts {figures['ppo_rollout_tokens_per_s']:.0f} tokens/s")
    if "ppo_weight_sync_s_per_step" in figures:
        parts.append(f"weight sync {figures['ppo_weight_sync_s_per_step']:.2f} s/step")
    return ", ".join(parts)
