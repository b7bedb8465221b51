"""w2s.compat.ppo: the weight-sync group over gloo, the reward model's normalisation restored after loading, and
the CPU argv of OpenRLHF's PPO driver. The sync into a real vLLM engine is tested in test_ppo_weight_sync.py."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from w2s.ports import rendezvous_port


def test_the_gloo_group_broadcasts_every_tensor_from_rank_0_to_every_other_rank():
    from w2s.compat.ppo import GlooWeightGroup

    port = rendezvous_port("127.0.0.1")
    sent = [torch.arange(12, dtype=torch.float32).reshape(3, 4), torch.tensor([1.5, -2.0, 3.0, 0.0, 7.0])]
    received: dict[int, list] = {}

    def receive(rank: int) -> None:  # a rollout engine's worker (threads here: gloo does not mind)
        group = GlooWeightGroup("127.0.0.1", port, rank, 3)
        received[rank] = [torch.zeros(t.shape) for t in sent]
        for t in received[rank]:
            group.broadcast(t, src=0)

    threads = [threading.Thread(target=receive, args=(rank,)) for rank in (1, 2)]
    for t in threads:
        t.start()
    group = GlooWeightGroup("127.0.0.1", port, 0, 3)
    for t in sent:
        group.broadcast(t, src=0, stream=None)  # OpenRLHF passes its CUDA stream; on CPU it is None
    for t in threads:
        t.join(timeout=60)
    assert {rank: [t.tolist() for t in got] for rank, got in received.items()} == \
        {1: [t.tolist() for t in sent], 2: [t.tolist() for t in sent]}


def test_the_reward_models_mean_and_std_come_from_its_config(tiny_reward_model, tmp_path):
    """transformers 5 materialises OpenRLHF's mean/std buffers without their values: before the fix the reward
    was (r - 1e-43) / -6e33."""
    import shutil

    from w2s.compat import ppo

    rm = tmp_path / "rm"
    shutil.copytree(tiny_reward_model, rm)
    config = json.loads((rm / "config.json").read_text())
    (rm / "config.json").write_text(json.dumps({**config, "mean": 0.25, "std": 2.0}))
    ppo.apply_in_worker()
    from openrlhf.trainer.ray import launcher

    model = launcher.get_llm_for_sequence_regression(str(rm), "reward", normalize_reward=True, param_dtype="fp32",
                                                     attn_implementation="eager", value_head_prefix="score")
    assert model.mean.tolist() == [0.25] and model.std.tolist() == [2.0]
    model.eval()
    ids = torch.tensor([[1, 5, 9, 13]])
    normalised = model(ids, attention_mask=torch.ones_like(ids))
    model.normalize_reward = False
    raw = model(ids, attention_mask=torch.ones_like(ids))
    assert torch.allclose(normalised, (raw - 0.25) / 2.0)


def test_a_cpu_runs_the_driver_without_sleep_and_with_the_gloo_sync():
    from w2s.backends.ppo_main import cpu_argv

    argv = ["--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep", "--vllm.sync_backend", "nccl",
            "--ds.param_dtype", "fp32"]
    assert cpu_argv(argv) == ["--train.colocate_all", "--ds.param_dtype", "fp32", "--vllm.sync_backend", "gloo"]


def test_openrlhfs_parser_takes_fp32_through_the_driver():
    import argparse

    from w2s.backends.ppo_main import allow_fp32_flag

    allow_fp32_flag()
    parser = argparse.ArgumentParser()
    parser.add_argument("--ds.param_dtype", type=str, default="bf16", choices=["bf16", "fp16"])
    assert vars(parser.parse_args(["--ds.param_dtype", "fp32"]))["ds.param_dtype"] == "fp32"
    with pytest.raises(SystemExit):
        parser.parse_args(["--ds.param_dtype", "fp64"])


def test_openrlhfs_model_groups_draw_their_rendezvous_port_where_w2s_ports_does(tmp_path, monkeypatch):
    """A resumed PPO run failed with EADDRINUSE: the critic's port, chosen by the kernel when the group was made,
    was taken by the time its model was set up (see w2s.ports)."""
    from w2s import ports
    from w2s.compat import ppo

    monkeypatch.setattr(ports, "reservations_dir", lambda: tmp_path)
    ppo.apply_in_worker()
    from openrlhf.trainer.ray import launcher

    port = launcher.BaseDistributedActor._get_free_port()
    first, last = ports.draw_window()
    assert first <= port <= last and (tmp_path / str(port)).exists()

