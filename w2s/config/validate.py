"""Cross-field rules: combinations that type checks cannot see, checked before any actor or model starts.

Everything here reads the config alone (and whether local files exist): no torch, no Ray, no GPU probe.
Resources are judged from what the recipe requests (``cluster.*``), which is what Ray will be asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from omegaconf import DictConfig

from w2s.config.checks import (
    bound_issues,
    check_attention,
    check_data,
    check_length,
    check_model,
    check_model_path,
    check_sampling,
    check_trainer,
    local_gpus,
    offload_without_zero3,
    role_gpus,
)
from w2s.errors import ConfigIssue

JOB_ALIASES = {"run": None, "aligner-train": "aligner", "train-aligner": "aligner"}


def colocate_issues(c: DictConfig) -> list[ConfigIssue]:
    """``cluster.colocate`` names known roles of whole GPUs, and no role asks for a fraction of a GPU: Ray places
    fractional requests best-fit, so two actors of one role would land on one GPU (two DeepSpeed ranks on one
    device, two vLLM engines awake on one) while the other roles' actors sat elsewhere."""
    roles = ("generator", "corrector", "trainer", "judge")
    colocated = [str(r) for r in c.colocate]
    issues = []
    unknown = [r for r in colocated if r not in roles]
    if unknown or len(set(colocated)) != len(colocated):
        issues.append(ConfigIssue("cluster.colocate", colocated, f"unknown or repeated roles {unknown or colocated}",
                                  f"list each of {', '.join(roles)} at most once"))
    for r in roles:
        gpus = float(c[r].num_gpus_per_actor)
        if 0 < gpus < 1:
            issues.append(ConfigIssue(
                f"cluster.{r}.num_gpus_per_actor", gpus, "a fraction of a GPU: Ray places fractional requests "
                "best-fit, so actors of one role would pair up on one GPU instead of sharing it with other roles",
                f"set it to 1 and share GPUs with cluster.colocate (e.g. cluster.colocate=[{r},trainer])"))
        elif r in colocated and gpus < 1:
            issues.append(ConfigIssue(f"cluster.{r}.num_gpus_per_actor", gpus, "a colocated role without GPUs "
                                      "(cluster.colocate shares GPUs)", f"set it to 1, or take {r} out of "
                                      "cluster.colocate"))
    if not issues and colocated and not c.address and c.num_cpus:
        from w2s.placement import gpu_pool

        pool = gpu_pool(c)
        if pool.total_cpus > c.num_cpus:
            issues.append(ConfigIssue(
                "cluster.colocate", colocated, f"{len(pool.bundles)} shared GPU(s) x ({pool.describe_seat()}) CPUs = "
                f"{pool.total_cpus:g} CPUs, but the local Ray instance has cluster.num_cpus={c.num_cpus}",
                "lower the colocated roles' num_cpus_per_actor, or raise cluster.num_cpus"))
    return issues


def validate(cfg: DictConfig, job: str | None = None) -> list[ConfigIssue]:
    """All cross-field problems of a composed config, for the given job (None: ``cfg.job``): the bounds and the
    cluster for every job, then the job's own checks (:data:`JOB_CHECKS`), then the models OpenRLHF will load."""
    from w2s.config.schema import W2SConfig

    job = JOB_ALIASES.get(job, job) if job else None
    job = job or cfg.job
    issues: list[ConfigIssue] = bound_issues(cfg, W2SConfig)
    _check_training_dtypes(cfg, issues)
    _check_cluster(cfg.cluster, issues)
    for check in JOB_CHECKS.get(job, ()):
        check(cfg, issues)
    _check_openrlhf_models(cfg, job, issues)
    return issues


def _templates(cfg: DictConfig) -> set[str]:
    from w2s.aligner.templates import TEMPLATE_NAMES

    return set(TEMPLATE_NAMES) | set(cfg.aligner.templates.keys())


def _check_training_dtypes(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    if role_gpus(cfg.cluster.trainer) > 0:  # float32 training is w2s's CPU path; OpenRLHF's GPU path takes bf16/fp16
        trained = (("train.sft", cfg.train.sft), ("train.dpo", cfg.train.dpo),
                   ("train.rlhf.reward_model", cfg.train.rlhf.reward_model), ("aligner.train", cfg.aligner.train))
        for key, section in trained:
            if section.param_dtype == "float32":
                issues.append(ConfigIssue(f"{key}.param_dtype", "float32", "float32 training is for CPU trainers; "
                                          "cluster.trainer requests GPUs", "use bfloat16 on GPUs"))


def _check_cluster(c: DictConfig, issues: list[ConfigIssue]) -> None:
    for role_key in ("generator", "corrector", "trainer", "judge"):
        role = c[role_key]
        if role.num_actors < 1:
            issues.append(ConfigIssue(f"cluster.{role_key}.num_actors", role.num_actors, "must be at least 1",
                                      f"set cluster.{role_key}.num_actors=1 (or more)"))
        if role.num_cpus_per_actor < 0 or role.num_gpus_per_actor < 0:
            issues.append(ConfigIssue(f"cluster.{role_key}", dict(role), "resources must not be negative", ""))
        if role.num_gpus_per_actor > 1 and role.num_gpus_per_actor != int(role.num_gpus_per_actor):
            issues.append(ConfigIssue(f"cluster.{role_key}.num_gpus_per_actor", role.num_gpus_per_actor,
                                      "above 1, GPUs per actor must be a whole number", ""))
    issues += colocate_issues(c)
    if c.address:  # a cluster to join: what it has is known once joined
        return
    for res, total in (("cpus", c.num_cpus), ("gpus", c.num_gpus)):  # a private local instance
        for role_key in ("generator", "corrector", "trainer", "judge"):
            role = c[role_key]
            need = role.num_actors * role[f"num_{res}_per_actor"]
            if res == "gpus" and not total and need > 0 and not local_gpus():
                issues.append(ConfigIssue(
                    f"cluster.{role_key}.num_gpus_per_actor", role.num_gpus_per_actor,
                    "this machine has no GPU (no /dev/nvidia* device), so the local Ray instance has none",
                    f"set cluster.{role_key}.num_gpus_per_actor=0 to run on CPU, join a GPU cluster with "
                    "cluster.address, or declare logical GPUs with cluster.num_gpus=N (placement only: CUDA "
                    "code would still fail)"))
            elif total and need > total:
                issues.append(ConfigIssue(
                    f"cluster.{role_key}", f"{role.num_actors} x {role[f'num_{res}_per_actor']:g} {res}",
                    f"needs {need:g} {res[:-1].upper()}s but the local Ray instance has cluster.num_{res}={total}",
                    f"lower cluster.{role_key}.num_actors or num_{res}_per_actor, or raise cluster.num_{res}"))


def _check_correction(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    """The loop's correct stage and ``w2s aligner correct`` (whose files are arguments, checked by the command)."""
    templates = _templates(cfg)
    if cfg.correct.template != "auto" and cfg.correct.template not in templates:
        issues.append(ConfigIssue("correct.template", cfg.correct.template, "unknown template",
                                  f"use auto or one of {sorted(templates)}"))
    check_sampling("correct", cfg.correct, "cluster.corrector", cfg.cluster.corrector, issues, model=cfg.model.aligner,
                   model_key="model.aligner")
    check_model("model.aligner", cfg.model.aligner, issues, required=True)


def _check_per_round_aligners(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    if not cfg.aligner.per_round:
        return
    if cfg.aligner.train.enabled:
        issues.append(ConfigIssue("aligner.train.enabled", True, "trains one Aligner for every round, but "
                                  "aligner.per_round trains a new one each round", "choose one: "
                                  "aligner.train.enabled=false, or aligner.per_round=[]"))
    if len(cfg.aligner.per_round) < cfg.loop.rounds:
        issues.append(ConfigIssue("aligner.per_round", list(cfg.aligner.per_round),
                                  f"has {len(cfg.aligner.per_round)} training set(s) for loop.rounds="
                                  f"{cfg.loop.rounds}", "give one per round"))
    for i, path in enumerate(cfg.aligner.per_round):
        check_data(f"aligner.per_round[{i}]", SimpleNamespace(path=path), issues, required=True)


def _check_aligner_training(cfg: DictConfig, issues: list[ConfigIssue], *, in_loop: bool = False) -> None:
    """``w2s aligner train``, and a loop that trains its Aligner (once, or each round with aligner.per_round)."""
    per_round = in_loop and bool(cfg.aligner.per_round)
    a, c, templates = cfg.aligner.train, cfg.cluster, _templates(cfg)
    if a.template not in templates:
        issues.append(ConfigIssue("aligner.train.template", a.template, "unknown template",
                                  f"use one of {sorted(templates)}"))
    mismatch = cfg.correct.template not in ("auto", a.template) and not cfg.correct.allow_template_mismatch
    if in_loop and mismatch:
        issues.append(ConfigIssue("correct.template", cfg.correct.template, f"differs from aligner.train.template="
                                  f"{a.template}: the Aligner this run trains would correct prompts in a format "
                                  "it never learnt", f"set correct.template=auto (or {a.template}), or "
                                  "correct.allow_template_mismatch=true to do it anyway"))
    if not 0 <= a.warmup_fraction < 1:
        issues.append(ConfigIssue("aligner.train.warmup_fraction", a.warmup_fraction, "must be in [0, 1)",
                                  "the paper's best identity warm-up share is 0.2"))
    if not 0 <= a.eval_fraction < 1:
        issues.append(ConfigIssue("aligner.train.eval_fraction", a.eval_fraction, "must be in [0, 1)", ""))
    if not per_round:
        check_data("aligner.train.data", a.data, issues, required=True)
    check_trainer("aligner.train", a, int(c.trainer.num_actors), issues)
    check_model("model.aligner", cfg.model.aligner, issues, required=True)
    check_attention("model.aligner", cfg.model.aligner, role_gpus(c.trainer) + role_gpus(c.corrector), issues)


def _check_loop(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    """``w2s run``: the Aligner it corrects with (and trains), the policy, its prompts, training and evaluation."""
    c = cfg.cluster
    _check_correction(cfg, issues)
    _check_per_round_aligners(cfg, issues)
    if cfg.aligner.train.enabled or cfg.aligner.per_round:
        _check_aligner_training(cfg, issues, in_loop=True)
    check_model("model.strong", cfg.model.strong, issues, required=True)
    check_attention("model.strong", cfg.model.strong, role_gpus(c.trainer) + role_gpus(c.generator), issues)
    check_sampling("generate", cfg.generate, "cluster.generator", c.generator, issues, model=cfg.model.strong,
                   model_key="model.strong")
    check_data("loop.prompts", cfg.loop.prompts, issues, required=True)
    if cfg.loop.rounds < 1:
        issues.append(ConfigIssue("loop.rounds", cfg.loop.rounds, "must be at least 1", "set loop.rounds=1"))
    if cfg.loop.ceiling:
        _check_ceiling(cfg, issues)
    _check_training_method(cfg, issues)
    if cfg.eval.enabled:
        _check_eval(cfg, issues)


def _check_training_method(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    from w2s.shipped import resolve_path

    c, method, trainer_ranks = cfg.cluster, cfg.train.method, int(cfg.cluster.trainer.num_actors)
    if method in ("sft", "dpo"):
        check_trainer(f"train.{method}", cfg.train[method], trainer_ranks, issues)
        check_length(f"train.{method}.max_len", cfg.train[method].max_len, cfg.model.strong, "model.strong", issues)
    if method == "dpo":
        d = cfg.train.dpo
        if not 0 <= d.min_pair_distance < 1:
            issues.append(ConfigIssue("train.dpo.min_pair_distance", d.min_pair_distance, "must be in [0, 1)",
                                      "0 drops only identical pairs"))
        if d.pair_source != "aligner":
            if not d.extra_pairs:
                issues.append(ConfigIssue("train.dpo.extra_pairs", "", f"is required with train.dpo.pair_source="
                                          f"{d.pair_source}", "give a pairs file, e.g. a PopAlign popalign.jsonl"))
            elif not resolve_path(d.extra_pairs).exists():
                issues.append(ConfigIssue("train.dpo.extra_pairs", d.extra_pairs, "no such file", ""))
        if d.beta <= 0:
            issues.append(ConfigIssue("train.dpo.beta", d.beta, "must be positive", "e.g. 0.1"))
    if method == "rlhf":
        check_trainer("train.rlhf.reward_model", cfg.train.rlhf.reward_model, trainer_ranks, issues)
        rm = cfg.train.rlhf.reward_model
        if not rm.base:  # the reward model starts from the policy: the policy's context bounds its inputs
            check_length("train.rlhf.reward_model.max_len", rm.max_len, cfg.model.strong, "model.strong", issues)
        ppo = cfg.train.rlhf.ppo
        if cfg.train.rlhf.ppo_enabled and ppo.ref_reward_offload and rm.zero_stage != 3:
            # (PPO trains at the reward model's ZeRO stage)
            issues.append(offload_without_zero3("train.rlhf.ppo.ref_reward_offload",
                                                "train.rlhf.reward_model.zero_stage", rm.zero_stage))
        attn = cfg.model.strong.attn_implementation
        if cfg.train.rlhf.ppo_enabled and ppo.packing_samples and attn != "flash_attention_2":
            issues.append(ConfigIssue("train.rlhf.ppo.packing_samples", True, "OpenRLHF's PPO packs on flash-attention"
                                      f" 2 only (it switches to it; model.strong.attn_implementation is {attn})",
                                      "set model.strong.attn_implementation=flash_attention_2 (CUDA and "
                                      "flash-attn), or train.rlhf.ppo.packing_samples=false"))
        if cfg.train.rlhf.ppo_enabled:
            check_length("train.rlhf.ppo.max_prompt_tokens + max_new_tokens",
                         ppo.max_prompt_tokens + ppo.max_new_tokens, cfg.model.strong, "model.strong", issues)
        if cfg.train.rlhf.ppo_enabled and not c.address and c.num_gpus and int(c.gpus_per_node) != int(c.num_gpus):
            # A private local instance is one node of cluster.num_gpus GPUs: known now, not first when PPO starts.
            issues.append(ConfigIssue(
                "cluster.gpus_per_node", c.gpus_per_node,
                f"PPO lays its actors out over nodes of this many GPUs, but the private local Ray instance is one "
                f"node of cluster.num_gpus={c.num_gpus}", f"set cluster.gpus_per_node={c.num_gpus}"))
        if cfg.train.rlhf.ppo_enabled and role_gpus(c.trainer) < 1:
            issues.append(ConfigIssue(
                "train.method", "rlhf",
                "RLHF's PPO stage runs through OpenRLHF's Ray PPO, which places its actors and rollout engines on "
                "GPUs, but cluster.trainer requests none",
                "set cluster.trainer.num_gpus_per_actor=1 (on a machine without CUDA Ray's logical GPUs serve: "
                "cluster.num_gpus=1, as recipes/tiny/rlhf.yaml does), or set train.rlhf.ppo_enabled=false to run "
                "the reward-model stage only"))


def _check_eval(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    check_data("eval.prompts", cfg.eval.prompts, issues, required=True)
    bad = [x for x in cfg.eval.compare_to if x not in ("previous", "initial")]
    if bad:
        issues.append(ConfigIssue("eval.compare_to", list(cfg.eval.compare_to),
                                  f"unknown entries {bad}", "use a list of: previous, initial"))
    check_sampling("eval.generate", cfg.eval.generate, "cluster.generator", cfg.cluster.generator, issues,
                   model=cfg.model.strong, model_key="model.strong")
    check_judges(cfg.eval.judges, cfg.cluster.judge, issues)


def _check_interpret(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    i = cfg.interpret
    check_data("interpret.pairs", i.pairs, issues, required=True)
    if i.tokens < 1:
        issues.append(ConfigIssue("interpret.tokens", i.tokens, "must be at least 1", "the paper reads 20"))
    if not 0 < i.heldout_fraction < 1:
        issues.append(ConfigIssue("interpret.heldout_fraction", i.heldout_fraction, "must be in (0, 1)", "e.g. 0.5"))
    if i.band and (len(i.band) != 2 or i.band[0] > i.band[1] or i.band[0] < 0):
        issues.append(ConfigIssue("interpret.band", list(i.band), "must be [first, last] with first <= last",
                                  "e.g. interpret.band=[2,8], or [] for none"))
    if not i.control.alphas:
        issues.append(ConfigIssue("interpret.control.alphas", [], "needs at least one coefficient",
                                  "the paper: [-1.0,-0.75,-0.5,-0.25,0.0,0.25,0.5]"))
    if any(layer < 0 for layer in i.control.layers):
        issues.append(ConfigIssue("interpret.control.layers", list(i.control.layers), "layers are 0-based indices",
                                  "or [] for the best-separating quarter"))
    if i.generate.backend != "transformers":
        issues.append(ConfigIssue("interpret.generate.backend", i.generate.backend, "reading and steering the residual "
                                  "stream needs the model in this process", "use transformers"))


def check_judges(judges: Any, role: Any, issues: list[ConfigIssue], key: str = "eval.judges") -> None:
    """Every enabled judge names what it needs: a model, a prompt, an endpoint, a key that is set."""
    import os

    from w2s.eval.presets import template_issues

    active = {n: j for n, j in judges.items() if j.enabled}
    if not active:
        issues.append(ConfigIssue(key, sorted(judges), "has no enabled judge",
                                  f"enable one ({key}.NAME.enabled=true) or set eval.enabled=false"))
    for name, j in active.items():
        k = f"{key}.{name}"
        if j.kind in ("reward-model", "cost-model"):
            check_model_path(f"{k}.model", j.model, issues, required=True)
        if j.kind != "pairwise":
            continue
        if not j.preset and not j.user_prompt:
            issues.append(ConfigIssue(f"{k}.preset", j.preset, "a pairwise judge needs a prompt",
                                      "choose a preset (harmlessness, helpfulness, dialogue-summary, empathy) or "
                                      f"write {k}.user_prompt"))
        if j.user_prompt:
            issues += template_issues(f"{k}.user_prompt", j.user_prompt)
        if j.backend == "local":
            check_model_path(f"{k}.model", j.model, issues, required=True)
            check_sampling(f"{k}.generate", j.generate, "cluster.judge", role, issues)
            continue
        e = j.endpoint
        for field in ("base_url", "model"):
            if not e[field]:
                issues.append(ConfigIssue(f"{k}.endpoint.{field}", e[field], "is required for backend=endpoint",
                                          "e.g. base_url=http://127.0.0.1:8000/v1 (vllm serve) and the served model "
                                          f"name, or {k}.backend=local with {k}.model=PATH"))
        if e.base_url and not str(e.base_url).startswith(("http://", "https://")):
            issues.append(ConfigIssue(f"{k}.endpoint.base_url", e.base_url, "is not an http(s) URL",
                                      "e.g. http://127.0.0.1:8000/v1"))
        if e.api_key_env and not os.environ.get(e.api_key_env):
            issues.append(ConfigIssue(f"{k}.endpoint.api_key_env", e.api_key_env, "names an unset environment variable",
                                      f"export {e.api_key_env}=... before the run (the key is never stored)"))
        if e.concurrency < 1 or e.max_retries < 0:
            issues.append(ConfigIssue(f"{k}.endpoint.concurrency", e.concurrency,
                                      "concurrency must be at least 1 and max_retries not negative", ""))


def _hub_cached_dir(name: str) -> Any:
    """The folder holding a hub model's cached config.json (the hub is not contacted), or None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # not a valid repo name, or no huggingface_hub: nothing cached to read
        return None
    from pathlib import Path

    return Path(found).parent if isinstance(found, str) else None


def _check_openrlhf_models(cfg: DictConfig, job: str, issues: list[ConfigIssue]) -> None:
    """The models OpenRLHF trains, which it always loads with their remote code enabled: one that ships code
    (``auto_map``) needs its section's trust_remote_code, found here before anything starts. And PPO's sequence
    budget: prompt + response must fit the reward model's max_len and the policy's context."""
    from w2s.assets import ASSET_PREFIX
    from w2s.backends.models import max_positions, ships_code
    from w2s.shipped import resolve_path

    def local_dir(path: str) -> Any:
        if not path or path.startswith(ASSET_PREFIX):  # assets are built by w2s: no code of their own
            return None
        p = resolve_path(path)
        return p if p.is_dir() else None

    trained = []  # (key of the path, path, key of the model section, model section)
    if job == "aligner" or (job == "loop" and (cfg.aligner.train.enabled or cfg.aligner.per_round)):
        trained.append(("model.aligner.path", cfg.model.aligner.path, "model.aligner", cfg.model.aligner))
    if job == "loop" or (job == "popalign" and cfg.popalign.train_dpo):
        trained.append(("model.strong.path", cfg.model.strong.path, "model.strong", cfg.model.strong))
    rlhf = job == "loop" and cfg.train.method == "rlhf"
    if rlhf and cfg.train.rlhf.reward_model.base:  # trained with the strong policy's settings
        trained.append(("train.rlhf.reward_model.base", cfg.train.rlhf.reward_model.base, "model.strong",
                        cfg.model.strong))
    for path_key, path, model_key, model in trained:
        if model.trust_remote_code or not path or path.startswith(ASSET_PREFIX):
            continue
        directory = local_dir(path) or _hub_cached_dir(path)
        if directory is not None and ships_code(directory):
            issues.append(ConfigIssue(
                f"{model_key}.trust_remote_code", False,
                f"{path_key}={path} ships its own Python code (auto_map in config.json), which OpenRLHF runs when "
                "it loads the model for training",
                f"set {model_key}.trust_remote_code=true only if you trust that code, or use a model without it"))
        elif directory is None and model.ships_code is not False:
            issues.append(ConfigIssue(
                f"{model_key}.ships_code", model.ships_code,
                f"{path_key}={path} is a hub model whose config.json is not here (nor in the hub cache), so w2s "
                "cannot see whether it ships Python code, which OpenRLHF would run when it loads the model",
                f"state {model_key}.ships_code=false if it ships none (or download it first), or set "
                f"{model_key}.trust_remote_code=true if you trust its code"))
    # Without trainer GPUs PPO is refused above, and its fix (ppo_enabled=false) makes the budget moot.
    if rlhf and cfg.train.rlhf.ppo_enabled and role_gpus(cfg.cluster.trainer) >= 1:
        from w2s.backends.ppo import sequence_issues

        policy = local_dir(cfg.model.strong.path)
        issues += sequence_issues(cfg.train.rlhf.ppo, reward_max_len=int(cfg.train.rlhf.reward_model.max_len),
                                  policy_positions=max_positions(policy) if policy is not None else None)


def _check_ceiling(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    """loop.ceiling: a ceiling trained as the policy is (SFT or DPO), and the evaluation PGR is made of."""
    if cfg.train.method not in ("sft", "dpo"):
        issues.append(ConfigIssue("loop.ceiling", True, f"trains its ceiling as the policy is trained; "
                                  f"train.method={cfg.train.method} has no ceiling track", "use sft or dpo, or "
                                  "loop.ceiling=false"))
    if not (cfg.eval.enabled and cfg.eval.aligner and "initial" in cfg.eval.compare_to) or cfg.aligner.per_round:
        issues.append(ConfigIssue("loop.ceiling", True, "PGR needs the round's evaluation and its floor, the "
                                  "Aligner judged on the evaluation prompts (one Aligner for every round)",
                                  "set eval.enabled=true, eval.aligner=true and 'initial' in eval.compare_to (and no "
                                  "aligner.per_round), or loop.ceiling=false"))


def _check_popalign(cfg: DictConfig, issues: list[ConfigIssue]) -> None:
    trainer_ranks = int(cfg.cluster.trainer.num_actors)
    """The popalign section: strategies, weights, the models they need, files, filters, judge, training."""
    from w2s.config.schema import POPALIGN_STRATEGIES

    p, c = cfg.popalign, cfg.cluster
    names = list(p.strategies)
    unknown = [n for n in names if n not in POPALIGN_STRATEGIES]
    if unknown or not names:
        issues.append(ConfigIssue("popalign.strategies", names, f"unknown strategies {unknown}" if unknown else
                                  "is empty", f"use a non-empty subset of {POPALIGN_STRATEGIES}"))
    if len(set(names)) != len(names):
        issues.append(ConfigIssue("popalign.strategies", names, "lists a strategy twice", "list each once"))
    for n in names:
        if n in POPALIGN_STRATEGIES and not 0 <= p[n].weight <= 1:
            issues.append(ConfigIssue(f"popalign.{n}.weight", p[n].weight, "must be in [0, 1] (the share of prompts "
                                      "this strategy builds a pair for)", "1 builds a pair for every prompt"))
    check_data("popalign.prompts", p.prompts, issues, required=True)
    chat_gpus = role_gpus(c.generator)
    if p.models.generator.path:
        check_model("popalign.models.generator", p.models.generator, issues, required=True)
    check_model("model.strong", cfg.model.strong, issues, required=True)  # the policy's tokenizer and DPO start
    for strategy, key in (("nparam", "smaller"), ("leaderboard", "lower"), ("nparam", "larger"),
                          ("leaderboard", "higher")):
        if strategy in names:
            check_model(f"popalign.models.{key}", p.models[key], issues, required=key in ("smaller", "lower"))
            check_attention(f"popalign.models.{key}", p.models[key], chat_gpus, issues)
    check_attention("popalign.models.generator", p.models.generator, chat_gpus, issues)
    check_sampling("popalign.generate", p.generate, "cluster.generator", c.generator, issues)
    if "aligner" in names:
        check_model("model.aligner", cfg.model.aligner, issues, required=True)
        check_sampling("correct", cfg.correct, "cluster.corrector", c.corrector, issues, model=cfg.model.aligner,
                        model_key="model.aligner")
    if "demon" in names:
        if p.demon.shots < 1:
            issues.append(ConfigIssue("popalign.demon.shots", p.demon.shots, "must be at least 1", "paper: 3"))
        if p.demon.path:
            from w2s.shipped import resolve_path

            if not resolve_path(p.demon.path).exists():
                issues.append(ConfigIssue("popalign.demon.path", p.demon.path, "no such file",
                                          "give a JSON demonstration file, or leave it empty for the shipped set"))
    f = p.filter
    if not 0 <= f.min_pair_distance < 1:
        issues.append(ConfigIssue("popalign.filter.min_pair_distance", f.min_pair_distance, "must be in [0, 1)",
                                  "0 drops only identical pairs"))
    if f.max_len < 0:
        issues.append(ConfigIssue("popalign.filter.max_len", f.max_len, "must not be negative", "0 means no limit"))
    if p.output.chunk_requests < 1:
        issues.append(ConfigIssue("popalign.output.chunk_requests", p.output.chunk_requests, "must be at least 1",
                                  "e.g. 256"))
    if p.judge.enabled and p.judge.kind == "reward-model" and not p.judge.model:
        issues.append(ConfigIssue("popalign.judge.model", p.judge.model, "is required for a reward-model judge",
                                  "set popalign.judge.model to a reward model (OpenRLHF, safe-rlhf or a transformers "
                                  "classifier), or "
                                  "popalign.judge.kind=embedding with reference answers in the prompt file"))
    if p.train_dpo:
        if cfg.model.strong.prompt_template:
            issues.append(ConfigIssue(
                "model.strong.prompt_template", cfg.model.strong.prompt_template,
                "PopAlign writes and trains its pairs as chat conversations: a policy that answers in a raw prompt "
                "template would be trained in another format than the one it answers in",
                "set popalign.train_dpo=false and train on its pairs with the loop (train.dpo.pair_source=extra, "
                "train.dpo.extra_pairs=the popalign.jsonl it writes), which renders them with the template; or "
                "leave prompt_template empty for a chat model"))
        check_trainer("train.dpo", cfg.train.dpo, trainer_ranks, issues)
        if cfg.train.dpo.beta <= 0:
            issues.append(ConfigIssue("train.dpo.beta", cfg.train.dpo.beta, "must be positive", "paper: 0.01"))
        check_attention("model.strong", cfg.model.strong, role_gpus(c.trainer), issues)


# Each job's own checks, in order (every job also gets the bounds, the cluster and the OpenRLHF models).
JOB_CHECKS: dict[str, tuple[Callable[[DictConfig, list[ConfigIssue]], None], ...]] = {
    "loop": (_check_loop,),
    "aligner": (_check_aligner_training,),
    "correct": (_check_correction,),
    "popalign": (_check_popalign,),
    "interpret": (_check_interpret,),
}
