"""Decoding presets and the resolved sampling parameters every backend uses.

Presets sit *under* explicit values: a value set in the config (not empty) always wins. Unset values
take the preset's, then the neutral default (temperature 1, top-p 1, top-k off, no penalties).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from w2s.errors import ConfigError, ConfigIssue

SAMPLING_PRESETS: dict[str, dict[str, Any]] = {
    # Aligner paper, Table 9: how the Aligner corrects answers.
    "aligner-paper": {"top_k": 10, "top_p": 0.95, "temperature": 0.3, "frequency_penalty": 1.2},
    # Aligner paper, Table 19: how the upstream answers of the dataset were generated.
    "upstream-paper": {"top_k": 10, "top_p": 0.95, "temperature": 0.5, "repetition_penalty": 1.1},
    "greedy": {"temperature": 0.0, "top_k": 0, "top_p": 1.0},
}
NEUTRAL: dict[str, Any] = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "frequency_penalty": 0.0,
                           "repetition_penalty": 1.0}
PASSTHROUGH = ("backend", "max_new_tokens", "max_prompt_tokens", "batch_prompts_per_actor", "seed")


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if isinstance(cfg, Mapping):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def resolve_sampling(sampling_cfg: Any) -> dict[str, Any]:
    """Merge the preset under explicit values.

    Args:
        sampling_cfg: a ``SamplingConfig`` (or a mapping with its keys).

    Returns:
        ``preset``, ``temperature``, ``top_p``, ``top_k``, ``frequency_penalty``, ``repetition_penalty``,
        ``greedy`` (temperature 0), plus ``backend``, ``max_new_tokens``, ``max_prompt_tokens``,
        ``batch_prompts_per_actor`` and ``seed`` as given.

    Raises:
        ConfigError: unknown preset or out-of-range values.
    """
    preset = _get(sampling_cfg, "preset", "") or ""
    if preset not in SAMPLING_PRESETS and preset != "":
        raise ConfigError([ConfigIssue("preset", preset, "unknown decoding preset",
                                       f"choose one of {sorted(SAMPLING_PRESETS)} or leave it empty")])
    out: dict[str, Any] = {"preset": preset}
    for key, neutral in NEUTRAL.items():
        value = _get(sampling_cfg, key)
        if value is None:
            value = SAMPLING_PRESETS.get(preset, {}).get(key, neutral)
        out[key] = type(neutral)(value)
    for key in PASSTHROUGH:
        out[key] = _get(sampling_cfg, key)
    issues = []
    if out["temperature"] < 0:
        issues.append(ConfigIssue("temperature", out["temperature"], "must be >= 0", "0 means greedy"))
    if not 0 < out["top_p"] <= 1:
        issues.append(ConfigIssue("top_p", out["top_p"], "must be in (0, 1]", "1 turns nucleus sampling off"))
    if out["top_k"] < 0:
        issues.append(ConfigIssue("top_k", out["top_k"], "must be >= 0", "0 turns top-k off"))
    if out["repetition_penalty"] <= 0:
        issues.append(ConfigIssue("repetition_penalty", out["repetition_penalty"], "must be > 0", "1 is off"))
    if issues:
        raise ConfigError(issues)
    out["greedy"] = out["temperature"] == 0.0
    return out


def engine_issues(key: str, sampling_cfg: Any) -> list[ConfigIssue]:
    """Problems with a sampling section's engine settings (tensor parallelism, vLLM memory), named under ``key``."""
    prefix = f"{key}." if key else ""
    issues = []
    tp = _get(sampling_cfg, "tensor_parallel_size", 1)
    if not isinstance(tp, int) or tp < 1:
        issues.append(ConfigIssue(f"{prefix}tensor_parallel_size", tp, "must be a whole number >= 1", "1: no tensor "
                                  "parallelism"))
    util = _get(sampling_cfg, "gpu_memory_utilization", 0.85)
    if not 0 < float(util) <= 1:
        issues.append(ConfigIssue(f"{prefix}gpu_memory_utilization", util, "must be in (0, 1]", "e.g. 0.85"))
    kv = _get(sampling_cfg, "kv_cache_gib", 0.0)
    if float(kv or 0) < 0:
        issues.append(ConfigIssue(f"{prefix}kv_cache_gib", kv, "must not be negative", "0 sizes it automatically"))
    return issues


# Offsets that keep the stages of one round apart when their seeds are derived (see :func:`stage_seed`).
STAGE_SEED_OFFSETS = {"generate": 0, "correct": 1, "popalign-correct": 2}


def stage_seed(section_seed: int | None, run_seed: int, stage: str, round_index: int | None = None) -> int:
    """The sampling seed of one stochastic stage: its section's own ``seed`` when set (0 is a seed), else
    ``run.seed + 1000 x round + the stage's offset``. Each row's own draw comes from it and the row's prompt (the
    engines' per-request seeds, :func:`w2s.generation.encoding.request_seeds`), so two values of ``run.seed`` give
    different samples and one value the same ones, in the loop and the CLIs alike."""
    if section_seed is not None:
        return int(section_seed)
    return int(run_seed) + 1000 * int(round_index or 0) + STAGE_SEED_OFFSETS[stage]
