"""RLHF's train stage: a reward model on the round's pairs (kept when a rerun finds it finished and unchanged), then,
on GPU clusters, PPO through OpenRLHF's own Ray trainer, resumable from its checkpoint."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from w2s.console import say
from w2s.controller.context import RunContext
from w2s.data.files import read_jsonl
from w2s.workers.requests import TrainRewardModel


def rlhf(run: RunContext, k: int, policy: str, reference: str | None, data: Path, stage_dir: Path,
         tb: str, *, chat: bool) -> dict[str, Any]:
    """Reward model on the round's pairs, then (GPU clusters) PPO through OpenRLHF's Ray trainer. A reward model
    this stage finished before a stop (the same training, its files unchanged) is used again, not retrained."""
    from w2s.assets import resolve_model_path
    from w2s.backends.checkpoint import finished_output, mark_finished, training_record
    from w2s.config.plain import to_plain

    cfg = run.cfg
    rm_cfg = cfg.train.rlhf.reward_model
    rm_out = stage_dir / "reward_model"
    base, seed = resolve_model_path(rm_cfg.base or policy), int(cfg.run.seed) + k
    record = training_record("reward_model", {"section": to_plain(rm_cfg), "seed": seed, "chat": chat},
                             model_path=base, data_paths=(str(data),))
    kept = finished_output(rm_out, record)
    if kept is not None:
        say(f"round {k} train: the reward model trained before the stop is used again ({rm_out}, verified)")
        result, rm_sha = dict(kept["result"]), str(kept["sha256"])
    else:
        result = run.services.trainer.train(TrainRewardModel(
            section=rm_cfg, base=base, data=str(data), output=str(rm_out), seed=seed, tensorboard_dir=tb + "-rm",
            chat=chat))
        rm_sha = mark_finished(rm_out, record, result)
    result["policy"] = policy
    if cfg.train.rlhf.ppo_enabled:
        out, steps = ppo(run, k, policy, rm_out, stage_dir, reference=reference, reward_sha256=rm_sha)
        result.update(policy=str(out), ppo_steps=steps)
    else:
        say(f"round {k} train: reward model trained ({rm_out}); PPO disabled (train.rlhf.ppo_enabled=false), "
            "the policy is unchanged this round")
    return result


def ppo(run: RunContext, k: int, policy: str, reward_model: Path, stage_dir: Path, *, reference: str | None = None,
        reward_sha256: str = "") -> tuple[Path, list[dict[str, float]]]:
    """PPO on the round's prompts against ``reward_model``: the trained policy's folder and every PPO step's
    figures (OpenRLHF's TensorBoard scalars, :mod:`w2s.backends.ppo_metrics`). On CPU every weight sync also
    appends a row to ``STAGE_DIR/weight_sync.jsonl`` (tensors, bytes, seconds, checksum)."""
    import ray

    from w2s.backends.ppo import alive_gpu_nodes
    from w2s.backends.ppo_launch import launch_ppo
    from w2s.backends.ppo_metrics import SYNC_LOG, read_steps
    from w2s.compat.ppo import SYNC_LOG_ENV

    node_gpus = alive_gpu_nodes()
    cmd = ppo_command(run, k, policy, reward_model, stage_dir, ray.get_runtime_context().gcs_address,
                           node_gpus=node_gpus, reference=reference)
    ckpt = ppo_checkpoint(run, k, policy, reward_model, stage_dir, node_gpus, reference=reference,
                               reward_sha256=reward_sha256)
    if not any(Path(ckpt, "_actor").glob("*")):  # PPO starts afresh: no figures of an earlier PPO may mix in
        shutil.rmtree(ppo_tensorboard_dir(run, k), ignore_errors=True)
        (stage_dir / SYNC_LOG).unlink(missing_ok=True)
    say(f"round {k} train: PPO through OpenRLHF ({stage_dir / 'ppo.log'})")
    run.services.close()  # PPO places its own actors on the trainer's GPUs: the roles give theirs back
    c = run.cfg.cluster
    launch_ppo(cmd, {SYNC_LOG_ENV: str(stage_dir / SYNC_LOG)}, stage_dir / "ppo.log",
               idle_timeout_s=float(c.liveness_timeout_s) or float("inf"), max_seconds=float(c.rpc_timeout_s) or None)
    shutil.rmtree(ckpt, ignore_errors=True)  # the policy is saved: its resumable state is not needed
    steps = read_steps(ppo_tensorboard_dir(run, k))
    # PPO's own steps (rollouts, training, weight syncs) are the stage's work; its start (Ray actors, models,
    # the vLLM engine) is start-up, as the roles' are.
    run.services.work_s += sum(s.get("timing/step_total", 0.0) for s in steps)
    return stage_dir / "policy", steps


def ppo_tensorboard_dir(run: RunContext, k: int) -> Path:
    """Where OpenRLHF's PPO trainer writes round k's TensorBoard events (a folder per start inside)."""
    return run.rd.path / "tensorboard" / f"round-{k:02d}-ppo"


def ppo_checkpoint(run: RunContext, k: int, policy: str, reward_model: Path, stage_dir: Path,
                   node_gpus: list[int] | None, *, reference: str | None = None, reward_sha256: str = "") -> str:
    """Round k's PPO checkpoint folder, made this PPO's own before OpenRLHF starts: OpenRLHF loads whatever
    checkpoint it finds there, so another training's (other prompts, policy, settings, or a reward model of
    other contents: ``reward_sha256``) is removed first."""
    from w2s.backends.args import checkpoint_dir
    from w2s.backends.checkpoint import claim, training_record
    from w2s.config.plain import to_plain

    ppo_cfg = run.cfg.train.rlhf.ppo
    ckpt = checkpoint_dir(str(stage_dir / "policy"))
    if ppo_cfg.checkpoint_every:
        record = training_record("ppo", {"ppo": to_plain(ppo_cfg), "seed": int(run.cfg.run.seed) + k,
                                         "gpus": node_gpus, "reward_model": str(reward_model),
                                         "reward_model_sha256": reward_sha256},
                                 model_path=policy, ref_path=reference or policy,
                                 data_paths=(str(stage_dir / "ppo_prompts.jsonl"),))
        if claim(ckpt, record, state_dir=str(Path(ckpt) / "_actor")):  # OpenRLHF's actor state
            say(f"round {k} train: PPO goes on from its checkpoint in {ckpt}")
    return ckpt


def ppo_command(run: RunContext, k: int, policy: str, reward_model: Path, stage_dir: Path, ray_address: str,
                node_gpus: list[int] | None = None, reference: str | None = None) -> list[str]:
    """OpenRLHF's PPO argv for round k: the round's prompts, the round's reward model, the trainer's GPUs
    laid out over the joined cluster's GPU nodes (``node_gpus``; None: as the config describes them), the KL
    anchor (``reference``; None: the policy)."""
    from w2s.backends.ppo import build_ppo_command, trainer_gpu_layout, write_prompt_rows

    cfg, c = run.cfg, run.cfg.cluster
    prompts = stage_dir / "ppo_prompts.jsonl"
    write_prompt_rows(prompts, [r["prompt"] for r in read_jsonl(run.rd.stage_dir(k, "generate") /
                                                                "answers.jsonl")])
    # PPO runs on the GPUs the recipe gives the trainer role, laid out as whole nodes.
    num_nodes, per_node = trainer_gpu_layout(c, node_gpus)
    rm = cfg.train.rlhf.reward_model
    return build_ppo_command(
        cfg.train.rlhf.ppo, policy_path=policy, reward_model_path=str(reward_model), prompts_path=str(prompts),
        output_dir=str(stage_dir / "policy"), num_gpus_per_node=per_node, num_nodes=num_nodes,
        ray_address=ray_address, reward_max_len=int(rm.max_len), seed=int(cfg.run.seed) + k,
        zero_stage=int(rm.zero_stage), param_dtype=rm.param_dtype,
        attn_implementation=cfg.model.strong.attn_implementation,
        trust_remote_code=bool(cfg.model.strong.trust_remote_code),
        prompt_template=str(cfg.model.strong.prompt_template or ""),
        tensorboard_dir=str(ppo_tensorboard_dir(run, k)), reference_path=reference)
