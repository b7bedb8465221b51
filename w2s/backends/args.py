"""The flag tree OpenRLHF's strategy, datasets and trainers read, built from a w2s trainer config section.

OpenRLHF 0.11 declares its flags as dotted names (``--ds.zero_stage``, ``--data.max_len``) inline in each CLI's
``__main__`` block and turns the flat argparse namespace into nested namespaces with
``openrlhf.utils.config.hierarchize``. :func:`flat_args` writes the same flat names (the set OpenRLHF's
``DeepspeedStrategy``, ``SFTDataset``/``RewardDataset`` and the SFT/DPO/RM trainers read), so the trainers can be
driven in-process without a command line.
"""

from __future__ import annotations

import argparse
import logging
from types import SimpleNamespace
from typing import Any, Literal

from w2s.errors import ConfigError, ConfigIssue

log = logging.getLogger("w2s.backends.openrlhf")

Kind = Literal["sft", "dpo", "rm"]

PARAM_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "float32": "fp32"}


def cfg_get(cfg: Any, name: str, default: Any = None) -> Any:
    """``cfg.name``, or ``default`` when it is missing or None (dataclass, DictConfig or namespace)."""
    value = getattr(cfg, name, default)
    return default if value is None else value


def batch_sizes(cfg: Any, world: int) -> tuple[int, int]:
    """(micro-batch per rank, global batch) of a trainer section, checked against ``world`` ranks."""
    micro = int(cfg_get(cfg, "micro_batch_samples_per_device", 1))
    global_batch = int(cfg_get(cfg, "global_batch_samples", 8))
    issues = []
    if micro < 1:
        issues.append(ConfigIssue("micro_batch_samples_per_device", micro, "must be at least 1", "set it to 1"))
    elif global_batch < micro * world or global_batch % (micro * world):
        fixed = max(1, round(global_batch / (micro * world))) * micro * world
        issues.append(ConfigIssue("global_batch_samples", global_batch,
                                  f"must be a multiple of micro_batch_samples_per_device x ranks = {micro} x "
                                  f"{world} (DeepSpeed accumulates whole micro-batches)",
                                  f"set global_batch_samples to {fixed}"))
    if issues:
        raise ConfigError(issues)
    return micro, global_batch


def flat_args(cfg: Any, *, seed: int, micro: int, global_batch: int, chat: bool, kind: Kind,
              tensorboard_dir: str | None, output_dir: str, attn: str) -> dict[str, Any]:
    """The flat dotted namespace OpenRLHF's strategy, datasets and trainers read (cf. its CLI parsers)."""
    optim = cfg_get(cfg, "optim", SimpleNamespace())
    lora = cfg_get(cfg, "lora", SimpleNamespace())
    dtype = str(cfg_get(cfg, "param_dtype", "bfloat16"))
    if dtype not in PARAM_DTYPES:
        raise ConfigError([ConfigIssue("param_dtype", dtype, "OpenRLHF trains in bf16 or fp16 (and, on CPU "
                                       "through w2s, fp32)", "use bfloat16, float16 or (CPU) float32")])
    zero_stage = int(cfg_get(cfg, "zero_stage", 2))
    lora_rank = int(cfg_get(lora, "rank", 0))
    if lora_rank > 0 and zero_stage == 3:
        raise ConfigError([ConfigIssue("zero_stage", zero_stage, "LoRA runs are saved as merged full models, "
                                       "which w2s does for ZeRO stage 0-2 only", "use zero_stage 2 with LoRA")])
    targets = list(cfg_get(lora, "target_modules", []) or [])
    betas = [float(b) for b in cfg_get(optim, "betas", [0.9, 0.95])]
    checkpoint_every = int(cfg_get(cfg, "checkpoint_every", 0) or 0)
    return {
        "local_rank": -1, "max_norm": float(cfg_get(optim, "max_grad_norm", 1.0)), "optim": "adam",
        "lr_scheduler": str(cfg_get(optim, "scheduler", "cosine_with_min_lr")),
        "lr_warmup_ratio": float(cfg_get(optim, "warmup_ratio", 0.03)),
        "min_lr_ratio": float(cfg_get(optim, "min_lr_ratio", 0.1)),
        "train.seed": seed, "train.full_determinism_enable": False, "train.micro_batch_size": micro,
        "train.batch_size": global_batch, "train.max_epochs": int(cfg_get(cfg, "epochs", 1)),
        "train.dynamic_batch_enable": False,
        "ds.zero_stage": zero_stage, "ds.param_dtype": PARAM_DTYPES[dtype], "ds.packing_samples": False,
        "ds.ring_attn_size": 1, "ds.tensor_parallel_size": 1,
        "ds.adam_offload": bool(cfg_get(cfg, "adam_offload", False)),
        "ds.zpg": 1, "ds.deepcompile": False, "ds.overlap_comm": False, "ds.grad_accum_dtype": None,
        "ds.use_universal_ckpt": False, "ds.attn_implementation": attn, "ds.value_head_prefix": "score",
        "ds.lora.rank": lora_rank, "ds.lora.alpha": int(cfg_get(lora, "alpha", 16)),
        "ds.lora.dropout": float(cfg_get(lora, "dropout", 0.0)),
        "ds.lora.target_modules": targets if targets else "all-linear",
        "model.gradient_checkpointing_enable": bool(cfg_get(cfg, "gradient_checkpointing", False)),
        "model.aux_loss_coef": 0.0, "model.pretrain_mode_enable": False,
        "model.beta": float(cfg_get(cfg, "beta", 0.1)),
        "model.nll_loss_coef": float(cfg_get(cfg, "nll_loss_coef", 0.0)),
        "model.label_smoothing": float(cfg_get(cfg, "label_smoothing", 0.0)),
        "model.ipo_enable": bool(cfg_get(cfg, "ipo", False)),
        "model.margin_loss_enable": False, "model.compute_fp32_loss_enable": False, "model.loss_type": "sigmoid",
        "data.input_key": "prompt", "data.output_key": "response", "data.apply_chat_template": chat,
        "data.prompt_key": "prompt", "data.chosen_key": "chosen", "data.rejected_key": "rejected",
        "data.tokenizer_chat_template": None, "data.max_len": int(cfg_get(cfg, "max_len", 2048)),
        "data.multiturn": False,
        "data.input_template": None,
        "adam.lr": float(cfg_get(optim, "lr", 2e-5)), "adam.betas": tuple(betas), "adam.eps": 1e-8,
        "adam.weight_decay": float(cfg_get(optim, "weight_decay", 0.0)), "muon.lr": 0.02, "muon.momentum": 0.95,
        "logger.wandb.key": None, "logger.wandb.run_name": kind, "logger.tensorboard_dir": tensorboard_dir,
        "logger.logging_steps": 1,
        "eval.steps": -1, "ckpt.save_steps": checkpoint_every or -1, "ckpt.path": checkpoint_dir(output_dir),
        "ckpt.max_num": CHECKPOINTS_KEPT, "ckpt.max_mem": 10**8, "ckpt.output_dir": output_dir,
        "ckpt.disable_ds": not checkpoint_every, "ckpt.save_hf": False,
    }


# Resumable state (w2s.backends.checkpoint): OpenRLHF removes the oldest checkpoint before it writes a new one,
# so two are kept; a kill mid-save then still leaves the previous one whole.
CHECKPOINTS_KEPT = 2


def checkpoint_dir(output_dir: str) -> str:
    """Where a training writing ``output_dir`` keeps its resumable state (``checkpoint_every``)."""
    return output_dir.rstrip("/") + ".ckpt"


def namespace(flat: dict[str, Any]) -> Any:
    """The nested namespace OpenRLHF reads (``args.ds.zero_stage``) from :func:`flat_args`' dict."""
    from openrlhf.utils.config import hierarchize

    return hierarchize(argparse.Namespace(**flat))


def optim_cfg(args: Any, steps: int) -> dict[str, Any]:
    """The optimizer config ``DeepspeedStrategy.prepare`` takes with a model."""
    return dict(optim=args.optim, muon=vars(args.muon), adam=vars(args.adam), lr_scheduler=args.lr_scheduler,
                lr_warmup_ratio=args.lr_warmup_ratio, min_lr_ratio=args.min_lr_ratio, max_norm=args.max_norm,
                scheduler_steps=max(1, steps))


def effective_global_batch(n_rows: int, micro: int, global_batch: int, world: int) -> int:
    """Shrink the global batch when the data cannot fill one optimizer step (a small round), else keep it."""
    per_rank_micro_batches = (n_rows // world) // micro
    if per_rank_micro_batches * micro * world >= global_batch:
        return global_batch
    shrunk = per_rank_micro_batches * micro * world
    log.warning("only %d rows for global_batch_samples=%d: using a global batch of %d", n_rows, global_batch, shrunk)
    return shrunk
