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
from typing import Any, Literal

from w2s.errors import ConfigError, ConfigIssue

log = logging.getLogger("w2s.backends.openrlhf")

Kind = Literal["sft", "dpo", "rm"]

PARAM_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16", "float32": "fp32"}


def batch_sizes(cfg: Any, world: int) -> tuple[int, int]:
    """(micro-batch per rank, global batch) of a trainer section, checked against ``world`` ranks."""
    micro = int(cfg.micro_batch_samples_per_device)
    global_batch = int(cfg.global_batch_samples)
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
    """The flat dotted namespace OpenRLHF's strategy, datasets and trainers read (cf. its CLI parsers), from a typed
    trainer section (:class:`~w2s.config.schema.TrainerConfig` or one of its kinds: every field is read from it,
    none restated here; DPO's own fields are read for DPO only)."""
    optim, lora = cfg.optim, cfg.lora
    dpo = kind == "dpo"
    dtype = str(cfg.param_dtype)
    if dtype not in PARAM_DTYPES:
        raise ConfigError([ConfigIssue("param_dtype", dtype, "OpenRLHF trains in bf16 or fp16 (and, on CPU "
                                       "through w2s, fp32)", "use bfloat16, float16 or (CPU) float32")])
    zero_stage = int(cfg.zero_stage)
    lora_rank = int(lora.rank)
    if lora_rank > 0 and zero_stage == 3:
        raise ConfigError([ConfigIssue("zero_stage", zero_stage, "LoRA runs are saved as merged full models, "
                                       "which w2s does for ZeRO stage 0-2 only", "use zero_stage 2 with LoRA")])
    targets = list(lora.target_modules or [])
    betas = [float(b) for b in optim.betas]
    checkpoint_every = int(cfg.checkpoint_every)
    return {
        "local_rank": -1, "max_norm": float(optim.max_grad_norm), "optim": "adam",
        "lr_scheduler": str(optim.scheduler),
        "lr_warmup_ratio": float(optim.warmup_ratio),
        "min_lr_ratio": float(optim.min_lr_ratio),
        "train.seed": seed, "train.full_determinism_enable": False, "train.micro_batch_size": micro,
        "train.batch_size": global_batch, "train.max_epochs": int(cfg.epochs),
        "train.dynamic_batch_enable": False,
        "ds.zero_stage": zero_stage, "ds.param_dtype": PARAM_DTYPES[dtype],
        "ds.packing_samples": bool(cfg.packing_samples),
        "ds.ring_attn_size": 1, "ds.tensor_parallel_size": 1,
        "ds.adam_offload": bool(cfg.adam_offload), "ref.offload": dpo and bool(cfg.ref_offload),
        "ds.zpg": 1, "ds.deepcompile": False, "ds.overlap_comm": False, "ds.grad_accum_dtype": None,
        "ds.use_universal_ckpt": False, "ds.attn_implementation": attn, "ds.value_head_prefix": "score",
        "ds.lora.rank": lora_rank, "ds.lora.alpha": int(lora.alpha),
        "ds.lora.dropout": float(lora.dropout),
        "ds.lora.target_modules": targets if targets else "all-linear",
        "model.gradient_checkpointing_enable": bool(cfg.gradient_checkpointing),
        "model.aux_loss_coef": 0.0, "model.pretrain_mode_enable": False,
        "model.beta": float(cfg.beta) if dpo else 0.0,
        "model.nll_loss_coef": float(cfg.nll_loss_coef) if dpo else 0.0,
        "model.label_smoothing": float(cfg.label_smoothing) if dpo else 0.0,
        "model.ipo_enable": dpo and bool(cfg.ipo),
        "model.margin_loss_enable": False, "model.compute_fp32_loss_enable": False, "model.loss_type": "sigmoid",
        "data.input_key": "prompt", "data.output_key": "response", "data.apply_chat_template": chat,
        "data.prompt_key": "prompt", "data.chosen_key": "chosen", "data.rejected_key": "rejected",
        "data.tokenizer_chat_template": None, "data.max_len": int(cfg.max_len),
        "data.multiturn": False,
        "data.input_template": None,
        "adam.lr": float(optim.lr), "adam.betas": tuple(betas), "adam.eps": 1e-8,
        "adam.weight_decay": float(optim.weight_decay), "muon.lr": 0.02, "muon.momentum": 0.95,
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
