"""The field-level checks :func:`w2s.config.validate.validate` composes: a model path, a data source, a trainer
section, a sampling section against its role and model, a context length, an attention kernel, a section's bounds.
Each appends :class:`~w2s.errors.ConfigIssue` s (key, value, problem, fix) and never raises: every problem is
reported at once."""

from __future__ import annotations

from typing import Any

from w2s.errors import ConfigIssue


def local_gpus() -> int:
    """NVIDIA GPUs this machine has, from their device files (no CUDA or torch import, so validation stays fast)."""
    import glob

    return len(glob.glob("/dev/nvidia[0-9]*"))


def role_gpus(role: Any) -> float:
    return float(role.num_actors) * float(role.num_gpus_per_actor)


def check_model(key: str, model: Any, issues: list[ConfigIssue], *, required: bool) -> None:
    from w2s.generation.chat import prompt_template_issues

    issues += prompt_template_issues(f"{key}.prompt_template", model.prompt_template)
    check_model_path(f"{key}.path", model.path, issues, required=required)


def check_model_path(key: str, path: str, issues: list[ConfigIssue], *, required: bool) -> None:
    from w2s.assets import ASSET_NAMES, ASSET_PREFIX

    if not path:
        if required:
            issues.append(ConfigIssue(key, path, "is required here",
                                      f"set {key} to a model directory or an asset (asset:tiny-weak, "
                                      "asset:tiny-strong, asset:smollm2)"))
        return
    if path.startswith(ASSET_PREFIX):
        if path[len(ASSET_PREFIX):] not in ASSET_NAMES:
            issues.append(ConfigIssue(key, path, "unknown asset",
                                      f"use one of {', '.join(ASSET_PREFIX + a for a in ASSET_NAMES)}"))
        return
    from w2s.assets import looks_local
    from w2s.shipped import resolve_path

    local = resolve_path(path)
    if local.is_dir() and not (local / "config.json").is_file():
        issues.append(ConfigIssue(key, path, "is a folder without config.json, not a model directory",
                                  "give a directory written by save_pretrained, a hub name (ORG/NAME) or an asset"))
    elif not local.is_dir() and (local.exists() or looks_local(path)):
        issues.append(ConfigIssue(key, path, "is a file" if local.exists() else "does not exist",
                                  "give a model directory, a hub name (ORG/NAME) or an asset (asset:smollm2)"))


def check_data(key: str, source: Any, issues: list[ConfigIssue], *, required: bool) -> None:
    from w2s.shipped import resolve_path

    path = source.path
    if not path:
        if required:
            issues.append(ConfigIssue(f"{key}.path", path, "is required here",
                                      f"set {key}.path to a JSONL/JSON/Parquet/CSV file or a saved dataset folder"))
        return
    if path.startswith("hub:"):
        return
    if not resolve_path(path).exists():
        issues.append(ConfigIssue(f"{key}.path", path, "no such file or folder",
                                  "give a path relative to the working directory, an absolute one, or "
                                  "recipes/... for data shipped with w2s"))


def offload_without_zero3(key: str, zero_key: str, zero_stage: int) -> ConfigIssue:
    """``key`` offloads a frozen model's parameters, which DeepSpeed does under ZeRO-3 only (``zero_key``)."""
    return ConfigIssue(key, True, f"offloads parameters, which DeepSpeed does under ZeRO-3 only ({zero_key} is "
                       f"{zero_stage})", f"set {zero_key}=3, or {key}=false")


def check_trainer(key: str, t: Any, trainer_ranks: int, issues: list[ConfigIssue]) -> None:
    per_step = t.micro_batch_samples_per_device * trainer_ranks
    if t.micro_batch_samples_per_device < 1:
        issues.append(ConfigIssue(f"{key}.micro_batch_samples_per_device", t.micro_batch_samples_per_device,
                                  "must be at least 1", "set it to 1 or more"))
    elif t.global_batch_samples < 1:
        issues.append(ConfigIssue(f"{key}.global_batch_samples", t.global_batch_samples, "must be at least 1",
                                  f"set {key}.global_batch_samples to a multiple of {per_step}"))
    elif trainer_ranks >= 1 and t.global_batch_samples % per_step:  # 0 ranks: cluster.trainer.num_actors says so
        fix_value = max(per_step, (t.global_batch_samples // per_step) * per_step)
        issues.append(ConfigIssue(
            f"{key}.global_batch_samples", t.global_batch_samples,
            f"must be a multiple of micro_batch_samples_per_device x trainer ranks = "
            f"{t.micro_batch_samples_per_device} x {trainer_ranks} = {per_step}",
            f"set {key}.global_batch_samples={fix_value}"))
    if t.zero_stage not in (0, 1, 2, 3):
        issues.append(ConfigIssue(f"{key}.zero_stage", t.zero_stage, "must be 0, 1, 2 or 3", "DeepSpeed ZeRO stage"))
    if t.get("ref_offload") and t.zero_stage != 3:  # (DPO's reference only)
        issues.append(offload_without_zero3(f"{key}.ref_offload", f"{key}.zero_stage", t.zero_stage))
    if t.epochs < 1:
        issues.append(ConfigIssue(f"{key}.epochs", t.epochs, "must be at least 1", f"set {key}.epochs=1"))
    if t.max_len < 16:
        issues.append(ConfigIssue(f"{key}.max_len", t.max_len, "is too short to hold a prompt and an answer",
                                  f"set {key}.max_len to 256 or more"))
    if t.optim.lr <= 0:
        issues.append(ConfigIssue(f"{key}.optim.lr", t.optim.lr, "must be positive", "e.g. 2e-5"))
    if not 0 <= t.optim.warmup_ratio < 1:
        issues.append(ConfigIssue(f"{key}.optim.warmup_ratio", t.optim.warmup_ratio, "must be in [0, 1)", "e.g. 0.03"))
    if len(t.optim.betas) != 2:
        issues.append(ConfigIssue(f"{key}.optim.betas", list(t.optim.betas), "needs exactly two values",
                                  f"e.g. {key}.optim.betas=[0.9,0.95]"))


def check_sampling(key: str, s: Any, role_key: str, role: Any, issues: list[ConfigIssue], model: Any = None,
                    model_key: str = "") -> None:
    from w2s.generation.encoding import context_issues
    from w2s.generation.sampling import engine_issues

    issues += engine_issues(key, s)
    if model is not None and model.path and not model.path.startswith("asset:"):
        from w2s.shipped import resolve_path

        declared = (int(model.context_length), f"{model_key}.context_length") if model_key else None
        issues += context_issues(key, resolve_path(model.path), s.max_prompt_tokens, s.max_new_tokens,
                                 declared=declared)
    if s.max_new_tokens < 1:
        issues.append(ConfigIssue(f"{key}.max_new_tokens", s.max_new_tokens, "must be at least 1", ""))
    if s.temperature is not None and s.temperature < 0:
        issues.append(ConfigIssue(f"{key}.temperature", s.temperature, "must not be negative", "0 means greedy"))
    if s.top_p is not None and not 0 < s.top_p <= 1:
        issues.append(ConfigIssue(f"{key}.top_p", s.top_p, "must be in (0, 1]", ""))
    if s.batch_prompts_per_actor < 1:
        issues.append(ConfigIssue(f"{key}.batch_prompts_per_actor", s.batch_prompts_per_actor, "must be at least 1",
                                  ""))
    gpus = role.num_gpus_per_actor if role is not None else 0
    # An engine owns the GPUs of its actor, one per tensor-parallel rank (on CPU, vLLM's CPU build runs the
    # engine on the actor's cores instead). A fractional GPU is a shared device for a one-GPU engine.
    tp = s.tensor_parallel_size
    if s.backend == "vllm" and gpus > 0 and tp >= 1 and gpus != tp and not (gpus < 1 and tp == 1):
        issues.append(ConfigIssue(
            f"{key}.tensor_parallel_size", s.tensor_parallel_size,
            f"each vLLM engine runs in one {role_key} actor on that actor's GPUs, but {role_key}.num_gpus_per_actor="
            f"{gpus:g}",
            f"set {role_key}.num_gpus_per_actor={s.tensor_parallel_size} (one GPU per tensor-parallel rank), or "
            f"{key}.tensor_parallel_size={gpus:g}" if gpus >= 1 else
            f"set {role_key}.num_gpus_per_actor={s.tensor_parallel_size}"))


def check_length(key: str, tokens: int, model: Any, model_key: str, issues: list[ConfigIssue]) -> None:
    """A training length over the context length of the model it trains (read locally, or as the recipe states
    it in ``MODEL_KEY.context_length``)."""
    from w2s.generation.encoding import known_context
    from w2s.shipped import resolve_path

    local = resolve_path(model.path) if model.path and not model.path.startswith("asset:") else None
    known = known_context(local, (int(model.context_length), f"{model_key}.context_length"))
    if known is not None and tokens > known[0]:
        issues.append(ConfigIssue(key, tokens, f"exceeds the model's context length {known[0]} ({known[1]} of "
                                  f"{model.path})", f"lower it to {known[0]} or less"))


def check_attention(key: str, model: Any, gpus: float, issues: list[ConfigIssue]) -> None:
    if model.attn_implementation == "flash_attention_2" and gpus <= 0:
        issues.append(ConfigIssue(f"{key}.attn_implementation", "flash_attention_2",
                                  "flash-attention needs CUDA GPUs but no role using this model requests any",
                                  f"set {key}.attn_implementation=sdpa on CPU"))


def bound_issues(node: Any, schema: type, prefix: str = "") -> list[ConfigIssue]:
    """Every count and limit below the lower bound its schema field declares (``minimum``), anywhere in the
    config (sections nested in sections, and named entries such as ``eval.judges.NAME``), whatever the job."""
    import dataclasses
    import typing

    issues: list[ConfigIssue] = []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if node is None or f.name not in node:
            continue
        value, key, kind = node[f.name], f"{prefix}{f.name}", hints[f.name]
        nested = [a for a in (typing.get_args(kind) or (kind,)) if dataclasses.is_dataclass(a)]
        if dataclasses.is_dataclass(kind):
            issues += bound_issues(value, kind, key + ".")
        elif typing.get_origin(kind) is dict and nested:  # dict[str, Section]: each named entry
            for name in value or {}:
                issues += bound_issues(value[name], nested[0], f"{key}.{name}.")
        minimum = f.metadata.get("minimum")
        if minimum is not None and isinstance(value, int | float) and not isinstance(value, bool) and value < minimum:
            zero = f.metadata.get("help", "").partition("0:")[2].split(")")[0].split(".")[0].strip()
            issues.append(ConfigIssue(key, value, "must not be negative" if minimum == 0 else f"must be at least "
                                      f"{minimum:g}", f"0 means {zero}" if minimum == 0 and zero else ""))
    return issues
