"""PPO through OpenRLHF's Ray trainer, launched as ``python -m w2s.backends.ppo_main`` (OpenRLHF's own
driver, ``openrlhf.cli.train_ppo_ray``, with w2s's patches in every process: :mod:`w2s.compat.ppo`).

PPO runs as a subprocess rather than in-process: OpenRLHF builds its ~150 flags and their argparse-time
validation inline under ``if __name__ == "__main__"``, and places its own Ray actors and vLLM engines. This
module maps a ``PPOConfig`` onto OpenRLHF 0.11's dotted flags (``--actor.num_nodes``, ``--vllm.num_engines``, ...)
and plans how actor, reference, critic, reward model and vLLM engines share the GPUs of the Ray cluster joined;
:mod:`w2s.backends.ppo_launch` runs the command. The reward is the reward model trained on the round's
(correction > answer) pairs (``--reward.model_name_or_path``); it also initialises the critic when the
advantage estimator is GAE.

Sequence lengths: OpenRLHF 0.11 has no prompt-length flag. ``--data.max_len`` is the whole sequence (vLLM's
``max_model_len``, and the length experiences are cut to) and ``--rollout.max_new_tokens`` the response, so a
prompt gets ``max_len - max_new_tokens`` tokens (cut from the left). w2s sets ``--data.max_len`` to
``max_prompt_tokens + max_new_tokens``, which must fit the reward model's ``max_len`` and the policy's context.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from w2s.backends.args import CHECKPOINTS_KEPT, PARAM_DTYPES, checkpoint_dir
from w2s.backends.models import guard_remote_code, max_positions
from w2s.data.files import write_jsonl
from w2s.errors import ConfigError, ConfigIssue, W2SError


@dataclass(frozen=True)
class RoleGPUs:
    """Where one OpenRLHF role runs: ``num_nodes`` x ``num_gpus_per_node`` GPUs."""

    num_nodes: int
    num_gpus_per_node: int

    @property
    def total(self) -> int:
        return self.num_nodes * self.num_gpus_per_node


@dataclass(frozen=True)
class PPOLayout:
    """GPU plan of one PPO run.

    With ``colocate_all`` every role and the vLLM engines share all GPUs (DeepSpeed and vLLM sleep in turn).
    Otherwise (one node only) vLLM takes ``vllm_engines x vllm_tensor_parallel_size`` GPUs, actor and reference
    share a group, critic and reward model share another (GAE), or the reward model gets one GPU of its own.
    """

    actor: RoleGPUs
    ref: RoleGPUs | None
    critic: RoleGPUs | None
    reward: RoleGPUs
    vllm_engines: int
    vllm_tensor_parallel_size: int
    colocate_all: bool
    colocate_actor_ref: bool
    colocate_critic_reward: bool

    @property
    def gpus_used(self) -> int:
        """Physical GPUs the plan occupies."""
        if self.colocate_all:
            return self.actor.total
        used = self.actor.total + self.vllm_engines * self.vllm_tensor_parallel_size
        if self.ref is not None and not self.colocate_actor_ref:
            used += self.ref.total
        if self.critic is not None:
            used += self.critic.total
        if not self.colocate_critic_reward:
            used += self.reward.total
        return used


def ppo_layout(cfg: Any, *, num_nodes: int, num_gpus_per_node: int) -> PPOLayout:
    """Plan the GPUs of a PPO run.

    Args:
        cfg: ``PPOConfig`` (dataclass or DictConfig).
        num_nodes: Nodes of the Ray cluster used for PPO.
        num_gpus_per_node: GPUs on each node.

    Returns:
        The layout.

    Raises:
        ConfigError: when the GPUs cannot hold the plan, naming the key to change.
    """
    tp = int(cfg.vllm_tensor_parallel_size)
    total = num_nodes * num_gpus_per_node
    has_critic = cfg.advantage_estimator == "gae"
    has_ref = float(cfg.init_kl_coef) > 0
    issues: list[ConfigIssue] = []
    if num_nodes < 1 or num_gpus_per_node < 1:
        raise ConfigError([ConfigIssue("cluster", f"{num_nodes} node(s) x {num_gpus_per_node} GPU(s)",
                                       "PPO needs at least one GPU (OpenRLHF's rollouts run on vLLM)",
                                       "run on a GPU cluster or set train.rlhf.ppo_enabled: false")])
    if tp < 1 or total % tp:
        issues.append(ConfigIssue("train.rlhf.ppo.vllm_tensor_parallel_size", tp,
                                  f"must divide the {total} GPU(s) of the run", "use 1 or a divisor of the GPUs"))
    if cfg.colocate_all:
        if issues:
            raise ConfigError(issues)
        every = RoleGPUs(num_nodes, num_gpus_per_node)
        # OpenRLHF asserts vllm engines x tp == actor GPUs when everything is colocated.
        return PPOLayout(actor=every, ref=every if has_ref else None, critic=every if has_critic else None,
                         reward=every, vllm_engines=total // tp, vllm_tensor_parallel_size=tp, colocate_all=True,
                         colocate_actor_ref=has_ref, colocate_critic_reward=has_critic)
    if num_nodes != 1:
        issues.append(ConfigIssue("train.rlhf.ppo.colocate_all", False, f"split GPU layouts are planned for one "
                                  f"node only; this run has {num_nodes}", "set colocate_all: true"))
    engines = int(cfg.vllm_engines)
    vllm_gpus = engines * tp
    rest = num_gpus_per_node - vllm_gpus
    if engines < 1 or rest < 2:
        issues.append(ConfigIssue("train.rlhf.ppo.vllm_engines", engines,
                                  f"{engines} engine(s) x tp {tp} leave {rest} of {num_gpus_per_node} GPUs for "
                                  "training; the split layout needs at least 1 engine and 2 training GPUs",
                                  "lower vllm_engines or set colocate_all: true"))
    if issues:
        raise ConfigError(issues)
    if has_critic:
        actor = RoleGPUs(1, rest - rest // 2)
        critic = RoleGPUs(1, rest // 2)
        reward = critic
    else:
        actor = RoleGPUs(1, rest - 1)
        critic = None
        reward = RoleGPUs(1, 1)
    return PPOLayout(actor=actor, ref=actor if has_ref else None, critic=critic, reward=reward, vllm_engines=engines,
                     vllm_tensor_parallel_size=tp, colocate_all=False, colocate_actor_ref=has_ref,
                     colocate_critic_reward=has_critic)


def alive_gpu_nodes() -> list[int]:
    """GPUs of each alive node of the Ray cluster this process has joined; nodes without GPUs are left out."""
    import ray

    gpus = [float(n.get("Resources", {}).get("GPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return [int(round(g)) for g in gpus if g >= 1]


def trainer_gpu_layout(cluster: Any, node_gpus: list[int] | None = None) -> tuple[int, int]:
    """(num_nodes, num_gpus_per_node) of a PPO run: the trainer role's GPUs laid out as whole nodes.

    Args:
        cluster: ``ClusterConfig``; ``trainer.num_actors x trainer.num_gpus_per_actor`` GPUs run PPO.
        node_gpus: GPUs of each GPU node of the Ray cluster joined (:func:`alive_gpu_nodes`). When given, the
            node size comes from the cluster and must agree with ``cluster.gpus_per_node``; None plans from the
            config alone (to show a command without a cluster).

    Raises:
        ConfigError: the config and the cluster disagree, or the GPUs cannot form whole nodes.
    """
    role = cluster.trainer
    total = int(float(role.num_actors) * float(role.num_gpus_per_actor))
    declared = int(cluster.gpus_per_node)
    per_node = declared
    if node_gpus is not None:
        if not node_gpus:
            raise ConfigError([ConfigIssue("cluster.trainer.num_gpus_per_actor", role.num_gpus_per_actor,
                                           "PPO needs GPUs but no alive node of the Ray cluster joined has any",
                                           "run on a GPU cluster or set train.rlhf.ppo_enabled=false")])
        if len(set(node_gpus)) > 1:
            raise ConfigError([ConfigIssue("cluster.gpus_per_node", declared,
                                           f"the Ray cluster's GPU nodes hold different GPU counts "
                                           f"{sorted(node_gpus)}; PPO lays its roles out over identical nodes",
                                           "join nodes with the same number of GPUs")])
        per_node = node_gpus[0]
        if per_node != declared:
            raise ConfigError([ConfigIssue("cluster.gpus_per_node", declared,
                                           f"the Ray cluster joined has {len(node_gpus)} GPU node(s) with {per_node} "
                                           "GPUs each", f"set cluster.gpus_per_node={per_node}")])
        if total > sum(node_gpus):
            raise ConfigError([ConfigIssue("cluster.trainer", f"{role.num_actors} x {role.num_gpus_per_actor:g} GPU",
                                           f"asks for {total} GPUs but the Ray cluster joined has {sum(node_gpus)}",
                                           "lower cluster.trainer.num_actors")])
    if total < 1 or per_node < 1:
        raise ConfigError([ConfigIssue("cluster.trainer.num_gpus_per_actor", role.num_gpus_per_actor,
                                       "PPO needs at least one GPU (OpenRLHF's rollouts run on vLLM)",
                                       "set cluster.trainer.num_gpus_per_actor=1 on a GPU cluster")])
    per = min(total, per_node)
    if total % per:
        raise ConfigError([ConfigIssue("cluster.trainer.num_actors", role.num_actors,
                                       f"{total} trainer GPUs do not fill whole nodes of {per_node} GPUs",
                                       f"use a multiple of {per_node} GPUs, or at most {per_node}")])
    return total // per, per


def _check_batches(cfg: Any, layout: PPOLayout) -> None:
    micro = int(cfg.micro_train_batch_samples_per_device)
    global_batch = int(cfg.global_train_batch_samples)
    actor_ranks = layout.actor.total
    issues = []
    if global_batch % (micro * actor_ranks):
        fixed = max(1, round(global_batch / (micro * actor_ranks))) * micro * actor_ranks
        issues.append(ConfigIssue("train.rlhf.ppo.global_train_batch_samples", global_batch,
                                  f"must be a multiple of micro_train_batch_samples_per_device x actor GPUs = "
                                  f"{micro} x {actor_ranks}", f"set it to {fixed}"))
    rollout_samples = int(cfg.rollout_batch_prompts) * int(cfg.samples_per_prompt)
    if rollout_samples // micro < actor_ranks:
        issues.append(ConfigIssue("train.rlhf.ppo.rollout_batch_prompts", int(cfg.rollout_batch_prompts),
                                  f"rollout_batch_prompts x samples_per_prompt / micro batch must give each of the "
                                  f"{actor_ranks} actor GPUs at least one micro-batch",
                                  f"raise it to at least {actor_ranks * micro}"))
    if cfg.advantage_estimator in ("rloo", "reinforce_baseline", "group_norm", "dr_grpo") and \
            int(cfg.samples_per_prompt) < 2:
        issues.append(ConfigIssue("train.rlhf.ppo.samples_per_prompt", int(cfg.samples_per_prompt),
                                  f"{cfg.advantage_estimator} needs a group baseline: more than one sample per prompt",
                                  "set samples_per_prompt: 4"))
    if issues:
        raise ConfigError(issues)


def sequence_issues(cfg: Any, *, reward_max_len: int, policy_positions: int | None = None) -> list[ConfigIssue]:
    """Problems with PPO's sequence budget: the prompt budget plus the response must fit the reward model's
    ``max_len`` (what it was trained to score) and the policy's context (``max_position_embeddings``).

    Args:
        cfg: ``PPOConfig``.
        reward_max_len: ``train.rlhf.reward_model.max_len``.
        policy_positions: The policy's context length when known (None: not checked).
    """
    prompt, new = int(cfg.max_prompt_tokens), int(cfg.max_new_tokens)
    issues = []
    for key, value in (("max_prompt_tokens", prompt), ("max_new_tokens", new)):
        if value < 1:
            issues.append(ConfigIssue(f"train.rlhf.ppo.{key}", value, "must be at least 1", "e.g. 512"))
    if issues:
        return issues
    total = prompt + new
    for limit, what, key in ((reward_max_len, "the reward model's max_len", "train.rlhf.reward_model.max_len"),
                             (policy_positions, "the policy's context (max_position_embeddings)", "")):
        if limit and total > limit:
            # Keep the response budget when a useful prompt budget is left, else split the limit 1:3.
            fit_prompt = limit - new if limit - new >= 128 else min(prompt, limit // 4)
            also = f", or raise {key}" if key else ""
            issues.append(ConfigIssue(
                "train.rlhf.ppo.max_prompt_tokens", prompt,
                f"max_prompt_tokens + max_new_tokens = {prompt} + {new} = {total} tokens exceeds {what} of {limit}",
                f"make them fit, e.g. train.rlhf.ppo.max_prompt_tokens={fit_prompt} and "
                f"train.rlhf.ppo.max_new_tokens={limit - fit_prompt}{also}"))
    return issues


def write_prompt_rows(path: str | os.PathLike, prompts: Iterable[str]) -> int:
    """Write PPO prompts as JSON Lines (``{"prompt": text}``; the chat template is applied by OpenRLHF)."""
    return write_jsonl(path, ({"prompt": prompt} for prompt in prompts))


def build_ppo_command(cfg_ppo: Any, *, policy_path: str, reward_model_path: str, prompts_path: str, output_dir: str,
                      num_gpus_per_node: int, num_nodes: int = 1, ray_address: str | None = None,
                      reward_max_len: int = 2048, seed: int = 42, zero_stage: int = 2,
                      param_dtype: str = "bfloat16", attn_implementation: str = "flash_attention_2",
                      trust_remote_code: bool = False, tensorboard_dir: str | None = None, prompt_template: str = "",
                      reference_path: str | None = None, python: str | None = None,
                      extra_args: Iterable[str] = ()) -> list[str]:
    """The argv of one OpenRLHF PPO run.

    Args:
        cfg_ppo: ``PPOConfig`` (dataclass or DictConfig).
        policy_path: Policy to train; OpenRLHF also starts the reference (KL anchor) from it, unless
            ``reference_path`` names another.
        reward_model_path: Reward model (from :func:`w2s.backends.openrlhf.train_reward_model`).
        prompts_path: JSON Lines prompts from :func:`write_prompt_rows`.
        output_dir: Where OpenRLHF saves the trained policy (HF format).
        num_gpus_per_node: GPUs per node.
        num_nodes: Nodes.
        ray_address: Ray cluster to join. OpenRLHF calls a bare ``ray.init()``, which joins ``RAY_ADDRESS``, so
            the command is prefixed with ``env RAY_ADDRESS=...``; None joins whatever ``ray.init()`` finds.
        reward_max_len: The reward model's ``max_len``; ``max_prompt_tokens + max_new_tokens`` must fit it (and
            the policy's context, read from its config.json when it is a local directory).
        seed: Training seed.
        zero_stage: DeepSpeed ZeRO stage.
        param_dtype: bfloat16, float16 or float32.
        attn_implementation: Attention kernel of OpenRLHF's models (the policy's model section's). It is passed
            as given: the models load on the GPU workers Ray picks, not in this process, so this machine's CUDA
            says nothing about them.
        trust_remote_code: The policy's model section's flag. OpenRLHF has no such flag and always runs a
            model's own code, so a policy or reward model that ships code is refused unless it is set.
        tensorboard_dir: OpenRLHF's TensorBoard directory.
        prompt_template: The policy's ``prompt_template`` (empty: its chat template): rollouts are prompted in the
            format the policy answers in, as OpenRLHF's ``--data.input_template``.
        reference_path: The KL anchor when it is not the policy (``train.reference: initial`` after round 1):
            the command then runs OpenRLHF's driver through :mod:`w2s.backends.ppo_main`, which gives it to the
            reference actors.
        python: Interpreter (default: this one).
        extra_args: Further OpenRLHF flags, appended last.

    Returns:
        The command as a list of arguments.

    Raises:
        ConfigError: the GPUs, batches or sequence budget do not fit, naming the key to change.
        W2SError: a model ships code and ``trust_remote_code`` is false.
    """
    layout = ppo_layout(cfg_ppo, num_nodes=num_nodes, num_gpus_per_node=num_gpus_per_node)
    _check_batches(cfg_ppo, layout)
    issues = sequence_issues(cfg_ppo, reward_max_len=reward_max_len, policy_positions=max_positions(policy_path))
    if issues:
        raise ConfigError(issues)
    for path in (policy_path, reward_model_path, reference_path):
        if path:
            guard_remote_code(path, trust_remote_code, key="model.strong.trust_remote_code")
    # float32 ("fp32") is w2s's addition to OpenRLHF's bf16 and fp16 (w2s.compat.ppo), for CPUs without bf16.
    dtype = PARAM_DTYPES.get(param_dtype)
    if dtype is None:
        raise ConfigError([ConfigIssue("param_dtype", param_dtype, "PPO trains in bfloat16, float16 or float32",
                                       "use one of those")])
    from w2s.backends.ppo_main import REFERENCE_FLAG

    entry = ["w2s.backends.ppo_main"]  # OpenRLHF's driver, with w2s's patches in every process (w2s.compat.ppo)
    if reference_path and reference_path != policy_path:
        entry += [REFERENCE_FLAG, reference_path]
    argv = [python or sys.executable, "-m", *entry]
    if ray_address:
        argv = ["env", f"RAY_ADDRESS={ray_address}", *argv]

    def flag(name: str, value: Any) -> None:
        argv.extend([f"--{name}", str(value)])

    argv += _placement_flags(layout)
    flag("actor.model_name_or_path", policy_path)
    flag("reward.model_name_or_path", reward_model_path)
    if layout.critic is not None:
        flag("critic.model_name_or_path", reward_model_path)  # the critic starts from the reward model (GAE)
    flag("data.prompt_dataset", prompts_path)
    flag("data.input_key", "prompt")
    if prompt_template:
        from w2s.generation.chat import PROMPT_TEMPLATES

        flag("data.input_template", PROMPT_TEMPLATES.get(prompt_template, prompt_template).replace("{prompt}", "{}"))
    else:
        argv.append("--data.apply_chat_template")
    # The whole sequence; OpenRLHF gives a prompt what the response leaves (there is no prompt-length flag).
    flag("data.max_len", int(cfg_ppo.max_prompt_tokens) + int(cfg_ppo.max_new_tokens))
    argv += _algorithm_flags(cfg_ppo, seed)
    flag("ds.zero_stage", zero_stage)
    if cfg_ppo.ref_reward_offload:  # (the config check asked for ZeRO-3, under which alone DeepSpeed offloads them)
        argv += ["--ref.offload", "--reward.offload"]
    flag("ds.param_dtype", dtype)
    if cfg_ppo.packing_samples:  # (on flash-attention 2, which the config check asked for)
        argv.append("--ds.packing_samples")
    flag("ds.attn_implementation", attn_implementation)
    argv.append("--reward.normalize_enable")  # uses the mean/std the reward model stored in its config
    flag("ckpt.output_dir", output_dir)
    flag("ckpt.path", checkpoint_dir(output_dir))
    if cfg_ppo.checkpoint_every:  # resumable state, loaded by a rerun (the loop checks it is this training's first)
        flag("ckpt.save_steps", int(cfg_ppo.checkpoint_every))
        flag("ckpt.max_num", CHECKPOINTS_KEPT)
        argv.append("--ckpt.load_enable")
    else:
        argv.append("--ckpt.disable_ds")
    if tensorboard_dir:
        flag("logger.tensorboard_dir", tensorboard_dir)
    argv.extend(extra_args)
    return argv


def _placement_flags(layout: PPOLayout) -> list[str]:
    """Where OpenRLHF puts each model's ranks and its rollout engines, and which of them share GPUs."""
    flags: list[str] = []
    roles = {"actor": layout.actor, "ref": layout.ref or layout.actor,  # unused without KL; OpenRLHF's default is 8
             "reward": layout.reward, "critic": layout.critic}
    for name, gpus in roles.items():
        if gpus is not None:
            flags += [f"--{name}.num_nodes", str(gpus.num_nodes), f"--{name}.num_gpus_per_node",
                      str(gpus.num_gpus_per_node)]
    flags += ["--vllm.num_engines", str(layout.vllm_engines),
              "--vllm.tensor_parallel_size", str(layout.vllm_tensor_parallel_size)]
    if layout.colocate_all:
        flags += ["--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep", "--vllm.gpu_memory_utilization",
                  "0.5"]
    else:
        if layout.colocate_actor_ref:
            flags.append("--train.colocate_actor_ref")
        if layout.colocate_critic_reward:
            flags.append("--train.colocate_critic_reward")
    return flags


def _algorithm_flags(cfg_ppo: Any, seed: int) -> list[str]:
    """PPO's own settings: rollout and training batches, learning rates, clipping, KL and advantages."""
    values = {
        "rollout.max_new_tokens": int(cfg_ppo.max_new_tokens),
        "rollout.batch_size": int(cfg_ppo.rollout_batch_prompts),
        "rollout.n_samples_per_prompt": int(cfg_ppo.samples_per_prompt),
        "rollout.micro_batch_size": int(cfg_ppo.micro_train_batch_samples_per_device),
        "train.micro_batch_size": int(cfg_ppo.micro_train_batch_samples_per_device),
        "train.batch_size": int(cfg_ppo.global_train_batch_samples),
        "train.max_epochs": 1,
        "train.num_episodes": int(cfg_ppo.epochs),
        "train.seed": seed,
        "actor.adam.lr": float(cfg_ppo.actor_lr),
        "critic.adam.lr": float(cfg_ppo.critic_lr),
        "actor.eps_clip": float(cfg_ppo.eps_clip),
        "critic.value_clip": float(cfg_ppo.value_clip),
        "algo.kl.init_coef": float(cfg_ppo.init_kl_coef),
        "algo.kl.estimator": cfg_ppo.kl_estimator,
        "algo.advantage.estimator": cfg_ppo.advantage_estimator,
    }
    return [part for name, value in values.items() for part in (f"--{name}", str(value))]


def declared_ppo_flags(source: str | os.PathLike | None = None) -> set[str]:
    """Every ``--flag`` that OpenRLHF's ``train_ppo_ray`` parser declares, read from its source with ``ast``.

    The module imports vLLM at top level, so it is read, not imported. Flags declared in a loop over constant
    prefixes (``for prefix in ("actor", "critic"): add_argument(f"--{prefix}.adam.lr")``) are expanded.

    Args:
        source: Path of ``train_ppo_ray.py`` (default: the installed openrlhf's).
    """
    if source is None:
        spec = importlib.util.find_spec("openrlhf")
        if spec is None or not spec.submodule_search_locations:
            raise W2SError("openrlhf is not installed; install it with `pip install --no-deps openrlhf==0.11.2`")
        source = Path(next(iter(spec.submodule_search_locations))) / "cli" / "train_ppo_ray.py"
    tree = ast.parse(Path(source).read_text(encoding="utf-8"))
    flags: set[str] = set()

    def visit(node: ast.AST, env: dict[str, list[str]]) -> None:
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and \
                isinstance(node.iter, (ast.Tuple, ast.List)) and \
                all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.iter.elts):
            inner = dict(env)
            inner[node.target.id] = [e.value for e in node.iter.elts]  # type: ignore[attr-defined]
            for child in node.body:
                visit(child, inner)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            for arg in node.args:
                for text in _strings(arg, env):
                    if text.startswith("--"):
                        flags.add(text)
        for child in ast.iter_child_nodes(node):
            visit(child, env)

    visit(tree, {})
    return flags


def _strings(node: ast.AST, env: dict[str, list[str]]) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.JoinedStr):
        results = [""]
        for part in node.values:
            if isinstance(part, ast.Constant):
                results = [r + str(part.value) for r in results]
            elif isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name) and part.value.id in env:
                results = [r + v for r in results for v in env[part.value.id]]
            else:
                return []
        return results
    return []


def command_flags(argv: list[str]) -> list[str]:
    """The OpenRLHF ``--flags`` of a command built by :func:`build_ppo_command` (w2s's own entry point's flag, the
    reference, is not one of them)."""
    from w2s.backends.ppo_main import REFERENCE_FLAG

    return [a for a in argv if a.startswith("--") and a != REFERENCE_FLAG]
