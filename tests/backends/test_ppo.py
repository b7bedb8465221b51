"""The PPO command builder: argv, its contract with OpenRLHF's own parser, GPU layouts and sequence budget."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from w2s.backends import ppo
from w2s.config.schema import ClusterConfig, PPOConfig, RoleConfig
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
    # OpenRLHF's driver through w2s's entry point, which patches every process of the job (w2s.compat.ppo).
    assert argv[:5] == ["env", "RAY_ADDRESS=10.0.0.1:6379", "/venv/bin/python", "-m", "w2s.backends.ppo_main"]
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
    assert "--ref.offload" not in argv and "--reward.offload" not in argv and "--ds.packing_samples" not in argv
    offloaded = _cmd(PPOConfig(ref_reward_offload=True), zero_stage=3)  # the frozen two's shards in host memory
    assert "--ref.offload" in offloaded and "--reward.offload" in offloaded
    assert set(ppo.command_flags(offloaded)) <= ppo.declared_ppo_flags()
    packed = _cmd(PPOConfig(packing_samples=True))  # (the config check asked for flash-attention 2)
    assert "--ds.packing_samples" in packed and set(ppo.command_flags(packed)) <= ppo.declared_ppo_flags()


def test_rollouts_are_prompted_in_the_policys_own_format():
    """A policy without a chat template (the paper's Alpaca models) is prompted with its prompt_template."""
    argv = _cmd(prompt_template="pku")
    assert _value(argv, "--data.input_template") == "BEGINNING OF CONVERSATION: USER: {} ASSISTANT:"
    assert "--data.apply_chat_template" not in argv
    assert set(ppo.command_flags(argv)) <= ppo.declared_ppo_flags()


def test_an_anchor_other_than_the_policy_runs_openrlhfs_driver_through_w2s_entry_point():
    """train.reference=initial after round 1: OpenRLHF has no reference flag, w2s.backends.ppo_main gives it."""
    argv = _cmd(reference_path="/models/initial", ray_address="10.0.0.1:6379", python="/venv/bin/python")
    assert argv[:7] == ["env", "RAY_ADDRESS=10.0.0.1:6379", "/venv/bin/python", "-m", "w2s.backends.ppo_main",
                        "--w2s.reference", "/models/initial"]
    assert _value(argv, "--actor.model_name_or_path") == "/models/policy"
    assert set(ppo.command_flags(argv)) <= ppo.declared_ppo_flags()
    # The anchor is the policy (round 1, or train.reference=previous): no reference flag.
    assert _cmd(reference_path="/models/policy")[1:4] == ["-m", "w2s.backends.ppo_main", "--actor.num_nodes"]


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


def test_prompt_budget_sets_the_whole_sequence_and_the_response():
    cfg = PPOConfig(max_prompt_tokens=1024, max_new_tokens=512)
    argv = _cmd(cfg, reward_max_len=2048)
    # OpenRLHF has no prompt flag: --data.max_len is prompt + response, so a prompt keeps max_prompt_tokens.
    assert _value(argv, "--data.max_len") == "1536" and _value(argv, "--rollout.max_new_tokens") == "512"
    assert argv.count("--data.max_len") == 1
    with pytest.raises(ConfigError, match=r"1024 \+ 2048 = 3072 tokens exceeds the reward model's max_len of 2048"):
        _cmd(PPOConfig(max_prompt_tokens=1024, max_new_tokens=2048), reward_max_len=2048)


def test_prompt_budget_must_fit_the_policys_context(tmp_path):
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 1024}))
    with pytest.raises(ConfigError, match=r"exceeds the policy's context \(max_position_embeddings\) of 1024"):
        _cmd(PPOConfig(max_prompt_tokens=600, max_new_tokens=512), policy_path=str(policy), reward_max_len=4096)
    argv = _cmd(PPOConfig(max_prompt_tokens=512, max_new_tokens=512), policy_path=str(policy), reward_max_len=4096)
    assert _value(argv, "--data.max_len") == "1024"


def test_argv_carries_the_attention_kernel_and_refuses_untrusted_code(tmp_path):
    assert _value(_cmd(attn_implementation="sdpa"), "--ds.attn_implementation") == "sdpa"
    assert _value(_cmd(attn_implementation="flash_attention_2"), "--ds.attn_implementation") == "flash_attention_2"
    coded = tmp_path / "coded"
    coded.mkdir()
    (coded / "config.json").write_text(json.dumps({"model_type": "llama",
                                                   "auto_map": {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}}))
    with pytest.raises(W2SError, match="model.strong.trust_remote_code=true"):
        _cmd(policy_path=str(coded))
    with pytest.raises(W2SError, match="auto_map"):
        _cmd(reward_model_path=str(coded))
    assert _value(_cmd(policy_path=str(coded), trust_remote_code=True), "--actor.model_name_or_path") == str(coded)


def _cluster(num_actors: int, gpus_per_node: int = 8) -> ClusterConfig:
    return OmegaConf.structured(ClusterConfig(gpus_per_node=gpus_per_node,
                                              trainer=RoleConfig(num_actors=num_actors, num_gpus_per_actor=1)))


def test_gpu_layout_of_the_config_alone():
    assert ppo.trainer_gpu_layout(_cluster(16)) == (2, 8)
    assert ppo.trainer_gpu_layout(_cluster(4)) == (1, 4)
    with pytest.raises(ConfigError, match="do not fill whole nodes"):
        ppo.trainer_gpu_layout(_cluster(12))


@pytest.fixture(scope="module")
def ray_with_8_gpus():
    """A private Ray whose one node declares 8 logical GPUs (none physical: nothing runs on them here)."""
    import ray

    ray.init(address="local", num_cpus=2, num_gpus=8, include_dashboard=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow  # a private Ray instance: 4-20 s to start on 2 cores
def test_gpu_layout_comes_from_the_ray_cluster_joined(ray_with_8_gpus, tmp_path):
    nodes = ppo.alive_gpu_nodes()
    assert nodes == [8]
    assert ppo.trainer_gpu_layout(_cluster(8), nodes) == (1, 8)
    assert ppo.trainer_gpu_layout(_cluster(4), nodes) == (1, 4)
    # The recipe says 4 GPUs per node, the cluster has 8 on its node: refused, naming the key and the value.
    with pytest.raises(ConfigError, match=r"cluster.gpus_per_node = 4: the Ray cluster joined has 1 GPU node\(s\) "
                                          r"with 8 GPUs each[\s\S]*set cluster.gpus_per_node=8"):
        ppo.trainer_gpu_layout(_cluster(4, gpus_per_node=4), nodes)
    with pytest.raises(ConfigError, match="asks for 16 GPUs but the Ray cluster joined has 8"):
        ppo.trainer_gpu_layout(_cluster(16), nodes)

    # The loop's PPO argv for a 1-node x 8-GPU recipe, laid out over the cluster: the policy's attention kernel.
    from w2s.config.compose import load_config
    from w2s.controller.context import RunContext
    from w2s.controller.rlhf import ppo_command
    from w2s.data.files import write_jsonl
    from w2s.rundir import RunDir

    cfg = load_config("gpu/alpaca7b-aligner7b-rlhf", ["cluster.trainer.num_actors=4"])
    rd = RunDir(tmp_path, cfg)
    write_jsonl(rd.stage_dir(1, "generate") / "answers.jsonl", [{"prompt": "Hi?", "answer": "x"}])
    stage = rd.stage_dir(1, "train")
    stage.mkdir(parents=True)
    argv = ppo_command(RunContext(cfg, rd), 1, "/models/policy", stage / "rm", stage, "127.0.0.1:1", node_gpus=nodes)
    anchored = ppo_command(RunContext(cfg, rd), 1, "/models/policy", stage / "rm", stage, "127.0.0.1:1",
                           node_gpus=nodes, reference="/models/initial")
    assert _value(anchored, "--w2s.reference") == "/models/initial" and "--w2s.reference" not in argv
    assert _value(argv, "--actor.num_gpus_per_node") == "4" and _value(argv, "--actor.num_nodes") == "1"
    assert _value(argv, "--ds.attn_implementation") == "flash_attention_2"
    ppo_cfg = cfg.train.rlhf.ppo
    assert _value(argv, "--data.max_len") == str(ppo_cfg.max_prompt_tokens + ppo_cfg.max_new_tokens)


def test_the_loop_keeps_only_this_rounds_own_ppo_checkpoint(tmp_path):
    """OpenRLHF loads any checkpoint it finds: the loop lets a rerun of the same round's PPO find its own and
    removes another's (here, another seed) before OpenRLHF starts."""
    from w2s.backends import checkpoint
    from w2s.config.compose import load_config
    from w2s.controller.context import RunContext
    from w2s.controller.rlhf import ppo_checkpoint
    from w2s.rundir import RunDir

    def prepared(seed: int) -> tuple[RunContext, Path]:
        cfg = load_config("gpu/alpaca7b-aligner7b-rlhf", [f"run.seed={seed}", f"run.dir={tmp_path / 'run'}"])
        rd = RunDir(tmp_path / "run", cfg)
        stage = rd.stage_dir(1, "train")
        stage.mkdir(parents=True, exist_ok=True)
        (stage / "ppo_prompts.jsonl").write_text('{"prompt": "Hi?"}\n')
        return RunContext(cfg, rd), stage

    def saved_actor(ckpt: Path) -> None:  # what OpenRLHF's actor saves
        (ckpt / "_actor" / "global_step20").mkdir(parents=True)
        (ckpt / "_actor" / "latest").write_text("global_step20")

    run, stage = prepared(0)
    ckpt = Path(ppo_checkpoint(run, 1, "/models/policy", stage / "rm", stage, [8], reward_sha256="aa"))
    assert ckpt == stage / "policy.ckpt" and (ckpt / checkpoint.RECORD).is_file()
    saved_actor(ckpt)
    ppo_checkpoint(run, 1, "/models/policy", stage / "rm", stage, [8], reward_sha256="aa")
    assert (ckpt / "_actor" / "global_step20").is_dir()  # the same PPO again: kept for OpenRLHF to load
    # The same path holding another reward model (retrained after a requeue): another PPO, its state removed.
    ppo_checkpoint(run, 1, "/models/policy", stage / "rm", stage, [8], reward_sha256="bb")
    assert not (ckpt / "_actor").exists()
    saved_actor(ckpt)
    other, _ = prepared(1)
    ppo_checkpoint(other, 1, "/models/policy", stage / "rm", stage, [8], reward_sha256="bb")
    assert not (ckpt / "_actor").exists()  # another seed's PPO: removed
