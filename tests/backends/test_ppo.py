"""The PPO command builder: argv, its contract with OpenRLHF's own parser, GPU layouts, and the launcher."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from w2s.backends import ppo
from w2s.config.schema import PPOConfig
from w2s.errors import ConfigError, W2SError


def _cmd(cfg: PPOConfig | None = None, **over) -> list[str]:
    kw = dict(policy_path="/models/policy", reward_model_path="/models/rm", prompts_path="/data/prompts.jsonl",
              output_dir="/out/ppo", num_gpus_per_node=8, num_nodes=1, ray_address=None)
    kw.update(over)
    return ppo.build_ppo_command(cfg or PPOConfig(), **kw)


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_argv_for_a_representative_config():
    cfg = PPOConfig(actor_lr=1e-6, critic_lr=5e-6, init_kl_coef=0.05, rollout_batch_prompts=32, samples_per_prompt=2,
                    global_train_batch_samples=32, max_new_tokens=256, colocate_all=True, epochs=2)
    argv = _cmd(cfg, ray_address="10.0.0.1:6379", python="/venv/bin/python", tensorboard_dir="/tb")
    assert argv[:5] == ["env", "RAY_ADDRESS=10.0.0.1:6379", "/venv/bin/python", "-m", "openrlhf.cli.train_ppo_ray"]
    expected = {
        "--actor.model_name_or_path": "/models/policy", "--reward.model_name_or_path": "/models/rm",
        "--critic.model_name_or_path": "/models/rm", "--data.prompt_dataset": "/data/prompts.jsonl",
        "--data.input_key": "prompt", "--ckpt.output_dir": "/out/ppo", "--actor.num_gpus_per_node": "8",
        "--vllm.num_engines": "8", "--vllm.tensor_parallel_size": "1", "--actor.adam.lr": "1e-06",
        "--critic.adam.lr": "5e-06", "--algo.kl.init_coef": "0.05", "--algo.advantage.estimator": "gae",
        "--rollout.batch_size": "32", "--rollout.n_samples_per_prompt": "2", "--train.batch_size": "32",
        "--rollout.max_new_tokens": "256", "--train.num_episodes": "2", "--ds.param_dtype": "bf16",
        "--logger.tensorboard_dir": "/tb", "--actor.eps_clip": "0.2", "--critic.value_clip": "5.0",
    }
    for flag, value in expected.items():
        assert _value(argv, flag) == value, flag
    for switch in ("--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep", "--data.apply_chat_template",
                   "--reward.normalize_enable"):
        assert switch in argv
    assert argv.count("--actor.model_name_or_path") == 1


def test_every_emitted_flag_exists_in_openrlhf_train_ppo_ray():
    declared = ppo.declared_ppo_flags()
    # The parser is read with ast; sanity-check the reader on flags declared plainly and in the prefix loop.
    assert {"--actor.num_nodes", "--vllm.num_engines", "--reward.model_name_or_path", "--actor.adam.lr",
            "--critic.adam.lr", "--algo.advantage.estimator"} <= declared
    assert len(declared) > 120
    configs = [
        PPOConfig(),
        PPOConfig(colocate_all=False, vllm_engines=3, advantage_estimator="reinforce", init_kl_coef=0.0),
        PPOConfig(colocate_all=False, vllm_engines=2, vllm_tensor_parallel_size=2),
        PPOConfig(advantage_estimator="group_norm", samples_per_prompt=4),
    ]
    for cfg in configs:
        argv = _cmd(cfg, tensorboard_dir="/tb")
        unknown = [f for f in ppo.command_flags(argv) if f not in declared]
        assert not unknown, (cfg, unknown)


def test_layout_colocated_shares_every_gpu():
    layout = ppo.ppo_layout(PPOConfig(colocate_all=True, vllm_tensor_parallel_size=2), num_nodes=2,
                            num_gpus_per_node=4)
    assert layout.actor == layout.ref == layout.critic == layout.reward == ppo.RoleGPUs(2, 4)
    assert layout.vllm_engines * layout.vllm_tensor_parallel_size == layout.actor.total == 8
    assert layout.gpus_used == 8


def test_layout_split_gae_gives_vllm_actor_and_critic_their_own_gpus():
    layout = ppo.ppo_layout(PPOConfig(colocate_all=False, vllm_engines=2), num_nodes=1, num_gpus_per_node=8)
    assert layout.vllm_engines == 2
    assert layout.actor == layout.ref == ppo.RoleGPUs(1, 3) and layout.colocate_actor_ref
    assert layout.critic == layout.reward == ppo.RoleGPUs(1, 3) and layout.colocate_critic_reward
    assert layout.gpus_used == 8
    argv = _cmd(PPOConfig(colocate_all=False, vllm_engines=2, global_train_batch_samples=63,
                          micro_train_batch_samples_per_device=1, rollout_batch_prompts=64))
    assert "--train.colocate_actor_ref" in argv and "--train.colocate_critic_reward" in argv
    assert "--train.colocate_all" not in argv


def test_layout_split_without_critic_gives_the_reward_model_one_gpu():
    cfg = PPOConfig(colocate_all=False, vllm_engines=1, advantage_estimator="reinforce")
    layout = ppo.ppo_layout(cfg, num_nodes=1, num_gpus_per_node=4)
    assert layout.critic is None and layout.reward == ppo.RoleGPUs(1, 1) and layout.actor == ppo.RoleGPUs(1, 2)
    assert layout.gpus_used == 4
    argv = _cmd(cfg, num_gpus_per_node=4)
    assert "--critic.model_name_or_path" not in argv and "--train.colocate_critic_reward" not in argv


def test_layout_and_batch_errors_name_the_key_to_change():
    with pytest.raises(ConfigError, match="vllm_engines"):
        ppo.ppo_layout(PPOConfig(colocate_all=False, vllm_engines=3), num_nodes=1, num_gpus_per_node=4)
    with pytest.raises(ConfigError, match="colocate_all"):
        ppo.ppo_layout(PPOConfig(colocate_all=False), num_nodes=2, num_gpus_per_node=8)
    with pytest.raises(ConfigError, match="vllm_tensor_parallel_size"):
        ppo.ppo_layout(PPOConfig(vllm_tensor_parallel_size=3), num_nodes=1, num_gpus_per_node=8)
    with pytest.raises(ConfigError, match="at least one GPU"):
        ppo.ppo_layout(PPOConfig(), num_nodes=1, num_gpus_per_node=0)
    with pytest.raises(ConfigError, match=r"global_train_batch_samples[\s\S]*set it to 64"):
        _cmd(replace(PPOConfig(), global_train_batch_samples=60))
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        _cmd(PPOConfig(advantage_estimator="rloo", samples_per_prompt=1))


def test_write_prompt_rows(tmp_path):
    path = tmp_path / "p.jsonl"
    assert ppo.write_prompt_rows(path, ["a?", "b?"]) == 2
    assert path.read_text().splitlines() == ['{"prompt": "a?"}', '{"prompt": "b?"}']


def test_launch_streams_the_log_and_reports_failures(tmp_path):
    log = tmp_path / "ppo.log"
    ppo.launch_ppo([sys.executable, "-c", "import os; print('hello', os.environ['W2S_X'])"], {"W2S_X": "42"}, log, 60)
    assert "hello 42" in log.read_text()
    with pytest.raises(W2SError, match=r"exit code 3[\s\S]*boom"):
        ppo.launch_ppo([sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"], None, log, 60)
    with pytest.raises(W2SError, match="did not finish within 1 s"):
        ppo.launch_ppo([sys.executable, "-c", "import time; print('start', flush=True); time.sleep(60)"], None,
                       tmp_path / "slow.log", 1)
