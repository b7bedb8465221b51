"""Resumable training state (``checkpoint_every``): a training killed between checkpoints goes on from the last
one and ends where an uninterrupted training ends; another training's checkpoint is never taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from w2s.backends import checkpoint
from w2s.backends import data as data_files
from w2s.backends.args import checkpoint_dir

ROWS = [(f"What is {i} plus {i + 3}?", f"It is {2 * i + 3}.") for i in range(32)]
PAIRS = [(p, a, "I do not know, sorry.") for p, a in ROWS]


# ----------------------------------------------------------------------------------------------- the record
def test_a_finished_output_is_reused_only_for_the_same_training_and_unchanged_files(tmp_path):
    """RLHF's reward model after a stop: kept with its training's record, content hash and result."""
    out = tmp_path / "reward_model"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"weights")
    record = {"kind": "reward_model", "seed": 1}
    sha = checkpoint.mark_finished(out, record, {"steps": 4, "losses": [0.7, 0.5]})
    assert (tmp_path / f"reward_model.{checkpoint.FINISHED}").is_file()
    kept = checkpoint.finished_output(out, record)
    assert kept == {"record": record, "sha256": sha, "result": {"steps": 4, "losses": [0.7, 0.5]}}
    assert checkpoint.finished_output(out, {**record, "seed": 2}) is None  # another training's
    (out / "model.safetensors").write_bytes(b"other weights")
    assert checkpoint.finished_output(out, record) is None  # changed since it finished
    assert checkpoint.finished_output(tmp_path / "never", record) is None


def _fake_checkpoint(ckpt: Path, record: dict, tag: str | None = "global_step2") -> None:
    ckpt.mkdir(parents=True)
    (ckpt / checkpoint.RECORD).write_text(json.dumps(record))
    if tag:
        (ckpt / tag).mkdir()
        (ckpt / "latest").write_text(tag)


def test_only_this_trainings_complete_checkpoint_is_taken(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n')
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    ours = checkpoint.training_record("sft", {"adam.lr": 1e-5, "logger.tensorboard_dir": "/a"},
                                      model_path=str(model), data_paths=(str(data),))
    # Where the logs go is not what the training is; its settings, data and model files are.
    assert ours == checkpoint.training_record("sft", {"adam.lr": 1e-5, "logger.tensorboard_dir": "/b"},
                                              model_path=str(model), data_paths=(str(data),))
    ckpt = tmp_path / "out.ckpt"
    _fake_checkpoint(ckpt, ours)
    assert checkpoint.claim(str(ckpt), ours) and (ckpt / "global_step2").is_dir()

    other_lr = checkpoint.training_record("sft", {"adam.lr": 2e-5}, model_path=str(model), data_paths=(str(data),))
    data.write_text('{"prompt": "a", "response": "c"}\n')
    other_data = checkpoint.training_record("sft", {"adam.lr": 1e-5}, model_path=str(model),
                                            data_paths=(str(data),))
    for i, other in enumerate((other_lr, other_data)):
        theirs = tmp_path / f"other-{i}.ckpt"
        _fake_checkpoint(theirs, ours)
        assert other != ours
        assert not checkpoint.claim(str(theirs), other)  # removed, and now recorded as the other training's
        assert not (theirs / "global_step2").exists()
        assert json.loads((theirs / checkpoint.RECORD).read_text()) == other

    # A save cut short before its `latest` (or a `latest` whose folder is gone) is no checkpoint.
    for name, tag in (("first-save-cut", None), ("latest-dangling", "global_step4")):
        cut = tmp_path / name
        _fake_checkpoint(cut, ours, tag=None)
        if tag:
            (cut / "latest").write_text(tag)
        assert checkpoint.latest_tag(str(cut)) is None and not checkpoint.claim(str(cut), ours)


def test_ppo_keeps_its_state_beside_the_policy_and_loads_it_only_when_asked():
    from w2s.backends.ppo import build_ppo_command
    from w2s.config.schema import PPOConfig

    kw = dict(policy_path="/m", reward_model_path="/rm", prompts_path="/p.jsonl", output_dir="/run/policy",
              num_gpus_per_node=1, attn_implementation="sdpa")
    off = build_ppo_command(PPOConfig(), **kw)
    on = build_ppo_command(PPOConfig(checkpoint_every=5), **kw)
    assert off[off.index("--ckpt.path") + 1] == on[on.index("--ckpt.path") + 1] == "/run/policy.ckpt"
    assert "--ckpt.disable_ds" in off and "--ckpt.load_enable" not in off
    assert "--ckpt.disable_ds" not in on and "--ckpt.load_enable" in on
    assert on[on.index("--ckpt.save_steps") + 1] == "5" and on[on.index("--ckpt.max_num") + 1] == "2"


# ----------------------------------------------------------------------------------------------- real trainings
# Killed by the test itself, deterministically, in the hook OpenRLHF calls after each optimizer step: at step
# KILL_AT, after the checkpoint of step KILL_AT - 1 and before any of KILL_AT (a kill between checkpoints).
KILL_AT = 5
_KILLED_TRAINING = textwrap.dedent("""
    import json, os, signal, sys
    from omegaconf import OmegaConf
    from w2s.compat import cpu
    cpu.apply()
    from w2s.backends import openrlhf
    kind, trainer_module, trainer_class, cfg, args, kill_at = json.loads(sys.argv[1])
    module = __import__(trainer_module, fromlist=[trainer_class])
    trainer = getattr(module, trainer_class)
    real = trainer.save_logs_and_checkpoints
    def killing(self, a, global_step, *rest, **kw):
        if global_step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, a, global_step, *rest, **kw)
    trainer.save_logs_and_checkpoints = killing
    getattr(openrlhf, {"sft": "train_sft", "rm": "train_reward_model"}[kind])(OmegaConf.create(cfg), *args,
                                                                             attn_implementation="eager")
""")
_TRAINERS = {"sft": ("openrlhf.trainer.sft_trainer", "SFTTrainer"),
             "rm": ("openrlhf.trainer.rm_trainer", "RewardModelTrainer")}


def _weights(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update(load_file(str(f)))
    assert out, f"no weights in {path}"
    return out


@pytest.mark.slow  # three real OpenRLHF trainings per kind, one of them in a subprocess that is killed
@pytest.mark.parametrize("kind", ["sft", "rm"])
def test_a_training_killed_between_checkpoints_resumes_and_ends_as_an_uninterrupted_one(kind, tiny_weak, tmp_path):
    from w2s.backends import openrlhf as backend
    from w2s.config.schema import RewardModelConfig, SFTConfig

    rows = tmp_path / "rows.jsonl"
    if kind == "sft":
        data_files.write_sft_rows(rows, ROWS, chat=True)
    else:
        data_files.write_pair_rows(rows, PAIRS)
    section = (SFTConfig if kind == "sft" else RewardModelConfig)(
        max_len=96, micro_batch_samples_per_device=4, global_batch_samples=8, epochs=3, param_dtype="float32",
        checkpoint_every=2)
    section.optim.lr = 2e-3
    cfg = OmegaConf.to_container(OmegaConf.structured(section))
    train = backend.train_sft if kind == "sft" else backend.train_reward_model

    def run(out: Path):
        return train(OmegaConf.create(cfg), tiny_weak, str(rows), str(out), attn_implementation="eager")

    whole = run(tmp_path / "whole")
    assert whole.steps == 12 and whole.resumed_from_step == 0  # 32 rows / 8 per step x 3 epochs
    assert not Path(checkpoint_dir(str(tmp_path / "whole"))).exists()  # removed once the model is saved

    out = tmp_path / "resumed"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_TRAINING,
         json.dumps([kind, *_TRAINERS[kind], cfg, [tiny_weak, str(rows), str(out)], KILL_AT])],
        capture_output=True, text=True, timeout=600,
        # A world of its own: this process's group (from the training above) holds the inherited port.
        env={k: v for k, v in os.environ.items()
             if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")})
    assert killed.returncode == -9, killed.stderr[-3000:]
    ckpt = checkpoint_dir(str(out))
    assert checkpoint.latest_tag(ckpt) == f"global_step{KILL_AT - 1}" and not out.exists()

    resumed = run(out)
    assert resumed.resumed_from_step == KILL_AT - 1 and resumed.metrics["resumed_from_step"] == KILL_AT - 1
    # Same data order, optimizer and schedule state from the checkpoint: the same losses from there on, and the
    # same trained model. The figures are the whole training's: the steps before the checkpoint as they were
    # logged, then this call's (step KILL_AT, lost with the kill, done again and counted once).
    assert resumed.steps == whole.steps and resumed.samples == whole.samples
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-4, abs=1e-5)
    assert resumed.metrics["loss_first"] == pytest.approx(whole.metrics["loss_first"], rel=1e-4)
    a, b = _weights(whole.output_dir), _weights(resumed.output_dir)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a), "resumed weights differ"
    assert not Path(ckpt).exists()
