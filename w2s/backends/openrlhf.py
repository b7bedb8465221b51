"""OpenRLHF's own SFT, DPO and reward-model trainers, run in this process.

Each ``train_*`` function follows the same path as OpenRLHF's ``cli/train_{sft,dpo,rm}.py`` ``train(args)``
(strategy, model, datasets, dataloaders, ``prepare``, trainer ``fit``, save), with the argument namespace built
from a w2s config section instead of a command line. The data files and their checks live in
:mod:`w2s.backends.data`, the OpenRLHF flag tree in :mod:`w2s.backends.args` (with this module, the only ones
of w2s importing OpenRLHF), what is known about a model before loading it in :mod:`w2s.backends.models`.

The current process is one rank of a torch.distributed world described by ``MASTER_ADDR``, ``MASTER_PORT``,
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with those unset it is a single rank. DeepSpeed picks the backend
(gloo on CPU, nccl on GPU). Without CUDA, :func:`w2s.compat.cpu.apply` is applied before OpenRLHF is imported.
Every call can be repeated in the same process (SFT, then DPO in the next round): the DeepSpeed engines of a
call are destroyed when it ends (but DPO's reference, kept loaded for the next round while it stays the same
model), while the torch.distributed process group is created once and reused (DeepSpeed's ``init_distributed``
keeps an initialised group), so no port or rendezvous is needed twice.

The attention kernel is the model section's ``attn_implementation`` (flash-attention 2 falls back to sdpa
without CUDA, see :func:`w2s.backends.models.training_attn`). OpenRLHF loads every model with its remote code
enabled, so a model that ships code is refused unless ``trust_remote_code`` is set.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from w2s.backends import checkpoint
from w2s.backends import packing as packing_check
from w2s.backends.args import (
    Kind,
    batch_sizes,
    effective_global_batch,
    flat_args,
    namespace,
    optim_cfg,
)
from w2s.backends.data import Data, check_enough, load_tokenizer, prepare_data
from w2s.backends.models import guard_remote_code, training_attn
from w2s.backends.reference import KEPT_REFERENCE, release
from w2s.data.files import atomic_write_text, naming
from w2s.errors import W2SError
from w2s.ports import rendezvous_port

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What one training call produced.

    Attributes:
        output_dir: Hugging Face model directory written by rank 0.
        steps: Optimizer steps taken by this call.
        samples: Training samples consumed by this call (steps x global batch).
        seconds: Wall time of the whole call (loading, training, saving).
        fit_seconds: The part spent in the optimizer loop itself (what ``w2s bench loop`` counts as work).
        losses: Training loss per optimizer step, averaged over ranks, first to last.
        metrics: Final or mean numbers worth logging (row counts, accuracy, rewards, ...).
        world_size: Ranks of the torch.distributed world that trained together.
        attn_implementation: The attention kernel the trained model was loaded with (read back from it).
        resumed_from_step: The step of the checkpoint this call went on from (``checkpoint_every``), 0: none.
        reference_reused: DPO: the reference was the one this process kept from its last training (not loaded).
            Not a metric: it tells the process's history (a resumed run loads it again), not the training.
    """

    output_dir: str
    steps: int
    samples: int
    seconds: float
    fit_seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    world_size: int = 1
    attn_implementation: str = ""
    resumed_from_step: int = 0
    reference_reused: bool = False


# ----------------------------------------------------------------------------------------------- imports, env
def _import_openrlhf() -> None:
    """Apply the CPU compatibility layer (no-op with CUDA) before OpenRLHF's models are imported."""
    from w2s.compat import cpu

    cpu.apply()


def ensure_dist_env() -> tuple[int, int]:
    """Fill in a single-rank world where the env describes none; return (rank, world_size)."""
    import torch

    if "WORLD_SIZE" not in os.environ:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(rendezvous_port("127.0.0.1")))
        os.environ.setdefault("RANK", "0")
        os.environ["WORLD_SIZE"] = "1"
        os.environ.setdefault("LOCAL_RANK", "0" if torch.cuda.is_available() else "-1")
    if not torch.cuda.is_available():
        # LOCAL_RANK != -1 makes OpenRLHF call torch.cuda.set_device (patched to a no-op on CPU, but keep -1).
        os.environ["LOCAL_RANK"] = "-1"
    return int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])


# ----------------------------------------------------------------------------------------------- training
class _StepLog:
    """Per-optimizer-step logs, taken from the trainer's ``save_logs_and_checkpoints`` hook.

    OpenRLHF's SFT/DPO/RM trainers call that method exactly once per optimizer step, on every rank, with the
    step's logs. Its ``loss_mean`` / ``acc_mean`` are means over the rank's own micro-batches of the step, so
    the hook averages them over ranks (a collective: safe because all ranks are in the hook together). This is
    more robust than parsing TensorBoard files, which only rank 0 writes and only when a directory is set.
    """

    def __init__(self, trainer: Any, strategy: Any, total_steps: int, global_batch: int, first_step: int = 0,
                 ckpt_dir: str | None = None):
        from w2s import progress

        # Resumed from a checkpoint of step k: steps 1..k as they were logged (checkpoint.STEPS), then this call's.
        self.records: list[dict[str, float]] = checkpoint.steps_before(ckpt_dir, first_step) if ckpt_dir else []
        earlier = len(self.records)
        history = Path(ckpt_dir) / checkpoint.STEPS if ckpt_dir and strategy.is_rank_0() else None
        if history is not None:
            history.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(history, "".join(json.dumps(r) + "\n" for r in self.records))
        progress.start(total_steps, "steps")
        if first_step:
            progress.update(first_step, samples=first_step * global_batch)
        original = getattr(trainer, "save_logs_and_checkpoints", None)
        if original is None:
            raise W2SError("this OpenRLHF version's trainer has no save_logs_and_checkpoints hook; w2s supports "
                           "openrlhf 0.11.x")

        def hook(args: Any, global_step: int, step_bar: Any, logs_dict: dict | None = None,
                 client_states: dict | None = None) -> Any:
            logs = dict(logs_dict or {})
            for key in ("loss_mean", "acc_mean"):
                if key in logs:
                    logs[key] = float(strategy.all_reduce(float(logs[key])))
            self.records.append({k: float(v) for k, v in logs.items() if isinstance(v, (int, float))})
            if history is not None:
                with naming(history), open(history, "a") as f:
                    f.write(json.dumps(self.records[-1]) + "\n")
            done = first_step + len(self.records) - earlier
            progress.update(done, samples=done * global_batch, loss=logs.get("loss_mean"))
            return original(args, global_step, step_bar, logs_dict, client_states)

        trainer.save_logs_and_checkpoints = hook

    @property
    def losses(self) -> list[float]:
        return [r["loss_mean"] for r in self.records if "loss_mean" in r]

    def mean(self, key: str) -> float | None:
        values = [r[key] for r in self.records if key in r]
        return sum(values) / len(values) if values else None


def _partial_dir(output_dir: str) -> str:
    return output_dir.rstrip("/") + ".partial"


def _save(strategy: Any, model: Any, tok: Any, output_dir: str, *, probe: bool = False) -> None:
    """Save an HF model directory atomically: rank 0 writes a sibling temp dir, then renames it into place.

    LoRA models are merged into their base weights first (OpenRLHF's ``save_model`` would save only the adapter),
    so later stages load the output with ``AutoModelForCausalLM`` like any full model. ``probe``: the saved
    model's log-probabilities of the refit probe go with it (:mod:`w2s.generation.refit`), for the engine that
    takes these weights in place to check itself against.
    """
    import torch.distributed as dist
    from peft import PeftModel

    partial = _partial_dir(output_dir)
    rank0 = strategy.is_rank_0()
    if rank0 and os.path.exists(partial):
        shutil.rmtree(partial)
    unwrapped = strategy._unwrap_model(model)
    # Every rank runs the forward pass (ZeRO-3 gathers each layer's shards from all of them); rank 0 writes it.
    refit = _refit_probe(unwrapped, tok) if probe else None
    if isinstance(unwrapped, PeftModel):
        if rank0:  # ZeRO 0-2 (enforced): every rank holds the full weights
            merged = unwrapped.merge_and_unload()
            merged.save_pretrained(partial)
            tok.save_pretrained(partial)
        dist.barrier()
    else:
        strategy.save_model(model, tok, partial)
    if rank0:
        from w2s.data.files import give_usual_modes

        if refit is not None:
            from w2s.generation.refit import write_probe

            write_probe(partial, *refit)
        give_usual_modes(partial)
        if os.path.exists(output_dir):
            old = output_dir.rstrip("/") + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(output_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(partial, output_dir)
    dist.barrier()


def _refit_probe(module: Any, tok: Any) -> tuple[list[int], list[float], str]:
    """The trained model's log-probabilities of the refit probe's tokens, in its training dtype."""
    from w2s.generation.refit import hf_token_logprobs, probe_ids

    ids = probe_ids(tok)
    training = module.training
    module.eval()
    try:
        logprobs = hf_token_logprobs(module, ids)
    finally:
        module.train(training)
    return ids, logprobs, str(next(module.parameters()).dtype).removeprefix("torch.")


def _setup(cfg: Any, kind: Kind, *, output_dir: str, seed: int, chat: bool, tensorboard_dir: str | None,
           attn_implementation: str) -> tuple[dict[str, Any], int, int, int]:
    """Flat OpenRLHF args for one run: (flat, micro, global_batch, world)."""
    _import_openrlhf()
    _, world = ensure_dist_env()
    micro, global_batch = batch_sizes(cfg, world)
    flat = flat_args(cfg, seed=seed, micro=micro, global_batch=global_batch, chat=chat, kind=kind,
                     tensorboard_dir=tensorboard_dir, output_dir=output_dir, attn=training_attn(attn_implementation))
    return flat, micro, global_batch, world


def _make_strategy(flat: dict[str, Any]) -> tuple[Any, Any]:
    from openrlhf.utils import get_strategy

    args = namespace(flat)
    strategy = get_strategy(args)
    strategy.setup_distributed()
    return args, strategy


def _finish_metrics(data: Data, global_batch: int, steplog: _StepLog) -> dict[str, float]:
    metrics = {"rows_in": float(data.rows_in), "rows_kept": float(len(data.dataset)),
               "rows_dropped_overlong": float(data.dropped_overlong), "rows_filtered_openrlhf": float(data.filtered),
               "global_batch_samples": float(global_batch)}
    losses = steplog.losses
    if losses:
        metrics["loss_first"] = losses[0]
        metrics["loss_last"] = losses[-1]
    return metrics


def _run(kind: Kind, cfg: Any, model_path: str, data_path: str, output_dir: str, *, ref_path: str | None,
         eval_path: str | None, seed: int, chat: bool, tensorboard_dir: str | None, attn_implementation: str,
         trust_remote_code: bool) -> TrainResult:
    start = time.monotonic()
    for path in (model_path, ref_path):
        if path:
            guard_remote_code(path, trust_remote_code)
    flat, micro, global_batch, world = _setup(cfg, kind, output_dir=output_dir, seed=seed, chat=chat,
                                              tensorboard_dir=tensorboard_dir,
                                              attn_implementation=attn_implementation)
    tok = load_tokenizer(model_path, "left" if kind == "rm" else "right", trust_remote_code)
    # Datasets first (they only need args), so the global batch can be fitted to a small round's data.
    probe_args = namespace(flat)
    data = prepare_data(kind, data_path, tok, probe_args, SimpleNamespace(args=probe_args), chat=chat,
                        overlong=str(cfg.overlong))
    check_enough(data, data_path, micro, world)
    global_batch = effective_global_batch(len(data.dataset), micro, global_batch, world)
    flat["train.batch_size"] = global_batch
    args, strategy = _make_strategy(flat)
    data.dataset.strategy = strategy

    model, module = _load_model(kind, model_path, args, strategy, tok)
    loaded_attn = str(getattr(module.config, "_attn_implementation", "") or "")  # what transformers really chose
    if args.model.gradient_checkpointing_enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    dataloader = strategy.setup_dataloader(data.dataset, micro, True, True, data.dataset.collate_fn)
    steps_per_epoch = len(dataloader) // strategy.accumulated_gradient
    total_steps = steps_per_epoch * args.train.max_epochs
    trainer, model, ref, reused = _trainer(kind, args, strategy, model, tok, dataloader, total_steps, global_batch,
                                           ref_path=ref_path, eval_path=eval_path, data_path=data_path, chat=chat,
                                           micro=micro, world=world)
    packing = packing_check.verify_prepared(kind, args, strategy, model) if args.ds.packing_samples else None
    consumed, first_step = 0, 0
    if not args.ckpt.disable_ds:
        record = checkpoint.training_record(kind, flat, model_path=model_path, ref_path=ref_path,
                                            data_paths=(data_path, eval_path), world_size=world)
        consumed, first_step = checkpoint.resume(strategy, model if kind == "rm" else model.model, args.ckpt.path,
                                                 record)
    steplog = _StepLog(trainer, strategy, total_steps, global_batch, first_step,
                       None if args.ckpt.disable_ds else args.ckpt.path)
    try:
        fit_start = time.monotonic()
        trainer.fit(args, consumed, steps_per_epoch)
        fit_seconds = time.monotonic() - fit_start
        if kind == "rm":
            strategy._unwrap_model(model).config.value_head_prefix = args.ds.value_head_prefix
        _save(strategy, model, tok, output_dir, probe=kind != "rm")
        if not args.ckpt.disable_ds:
            checkpoint.finish(strategy, args.ckpt.path)
        metrics = {**_finish_metrics(data, global_batch, steplog), **_kind_metrics(kind, steplog, strategy, model)}
    finally:
        release(model)  # the DPO reference is kept for the next round (KEPT_REFERENCE)
        del trainer, model, ref
        gc.collect()
    steps = len(steplog.records)
    if first_step:
        metrics["resumed_from_step"] = float(first_step)
    if kind == "dpo":
        metrics["reference_reused"] = float(reused)
    if packing is not None:
        metrics["packing_difference"] = packing
    return TrainResult(output_dir=output_dir, steps=steps, samples=steps * global_batch,
                       seconds=time.monotonic() - start, fit_seconds=fit_seconds, losses=steplog.losses,
                       metrics=metrics, world_size=world, attn_implementation=loaded_attn,
                       resumed_from_step=first_step, reference_reused=reused)


def _trainer(kind: Kind, args: Any, strategy: Any, model: Any, tok: Any, dataloader: Any, total_steps: int,
             global_batch: int, *, ref_path: str | None, eval_path: str | None, data_path: str, chat: bool,
             micro: int, world: int) -> tuple[Any, Any, Any, bool]:
    """OpenRLHF's trainer of ``kind`` over the prepared ``model``: (trainer, the DeepSpeed-wrapped model, the DPO
    reference or None, whether that reference was the one kept from an earlier training)."""
    common = dict(strategy=strategy, train_dataloader=dataloader, max_norm=args.max_norm,
                  max_epochs=args.train.max_epochs, disable_ds_ckpt=args.ckpt.disable_ds)
    ref, reused = None, False
    if kind == "sft":
        from openrlhf.trainer.sft_trainer import SFTTrainer

        model, optim, scheduler = strategy.prepare((model, optim_cfg(args, total_steps)))
        trainer = SFTTrainer(model=model, optim=optim, eval_dataloader=None, scheduler=scheduler,
                             batch_size=global_batch, tokenizer=tok, **common)
    elif kind == "dpo":
        from openrlhf.models import Actor
        from openrlhf.trainer.dpo_trainer import DPOTrainer

        ref, reused = KEPT_REFERENCE.get(ref_path, args, world)
        if ref is None:
            ref = Actor(ref_path, attn_implementation=args.ds.attn_implementation, param_dtype=args.ds.param_dtype,
                        ds_config=strategy.get_ds_eval_config(offload=bool(args.ref.offload)),
                        packing_samples=args.ds.packing_samples)
            ref._offload = bool(args.ref.offload)  # what strategy.prepare reads (as OpenRLHF's DPO CLI sets it)
            if getattr(ref.model.config, "pad_token_id", None) is None:
                ref.model.config.pad_token_id = tok.pad_token_id
            (model, optim, scheduler), ref = strategy.prepare((model, optim_cfg(args, total_steps)), ref)
            KEPT_REFERENCE.keep(ref_path, args, world, ref)
        else:
            model, optim, scheduler = strategy.prepare((model, optim_cfg(args, total_steps)))
            ref.packing_samples = args.ds.packing_samples  # kept from a training that may have packed or not
        trainer = DPOTrainer(model=model, ref_model=ref, tokenizer=tok, optim=optim, eval_dataloader=None,
                             scheduler=scheduler, beta=args.model.beta, **common)
    else:
        from openrlhf.trainer.rm_trainer import RewardModelTrainer

        # The eval pass at the end of each epoch stores the reward mean/std in the config (used to normalise
        # rewards in PPO); without an eval file the training rows serve for these statistics.
        eval_data = prepare_data("rm", eval_path or data_path, tok, args, strategy, chat=chat, overlong="truncate")
        eval_loader = strategy.setup_dataloader(eval_data.dataset, micro, True, False, eval_data.dataset.collate_fn,
                                                drop_last=False)
        model, optim, scheduler = strategy.prepare((model, optim_cfg(args, total_steps)))
        trainer = RewardModelTrainer(model=model, optim=optim, eval_dataloader=eval_loader, scheduler=scheduler,
                                     tokenizer=tok, loss=args.model.loss_type, **common)
    return trainer, model, ref, reused


def _load_model(kind: Kind, model_path: str, args: Any, strategy: Any, tok: Any) -> tuple[Any, Any]:
    """The model to train, and its transformers module: OpenRLHF's Actor (SFT, DPO) or a reward model with a
    fresh value head (RM)."""
    from openrlhf.models import Actor, get_llm_for_sequence_regression

    model_kw = dict(attn_implementation=args.ds.attn_implementation, param_dtype=args.ds.param_dtype,
                    lora_rank=args.ds.lora.rank, lora_alpha=args.ds.lora.alpha, lora_dropout=args.ds.lora.dropout,
                    target_modules=args.ds.lora.target_modules, ds_config=strategy.get_ds_train_config(),
                    packing_samples=args.ds.packing_samples)
    if kind == "rm":
        model = get_llm_for_sequence_regression(model_path, "reward", init_value_head=True,
                                                value_head_prefix=args.ds.value_head_prefix, **model_kw)
        module = model
        if args.ds.lora.rank > 0:
            # PEFT freezes every non-adapter weight, including the freshly initialised value head; a random
            # frozen head would leave the reward model near chance, so it is trained along with the adapters.
            for name, param in model.named_parameters():
                if f"{args.ds.value_head_prefix}." in name and "lora_" not in name:
                    param.requires_grad = True
    else:
        model = Actor(model_path, **model_kw)
        module = model.model
    if getattr(module.config, "pad_token_id", None) is None:
        module.config.pad_token_id = tok.pad_token_id
    return model, module


def _kind_metrics(kind: Kind, steplog: _StepLog, strategy: Any, model: Any) -> dict[str, float]:
    """What DPO and reward-model training add to the common figures: preference accuracy and rewards, and the
    reward model's normalisation (mean, std) as stored in its config."""
    metrics: dict[str, float] = {}
    if kind in ("dpo", "rm"):
        for key, name in (("acc_mean", "acc"), ("chosen_reward", "chosen_reward"),
                          ("reject_reward", "rejected_reward")):
            value = steplog.mean(key)
            if value is not None:
                metrics[name] = value
    if kind == "rm":
        config = strategy._unwrap_model(model).config
        for key in ("mean", "std"):
            if getattr(config, key, None) is not None:
                metrics[f"reward_{key}"] = float(getattr(config, key))
    return metrics


def train_sft(cfg: Any, model_path: str, data_path: str, output_dir: str, *, seed: int = 42, chat: bool = True,
              tensorboard_dir: str | None = None, attn_implementation: str = "sdpa",
              trust_remote_code: bool = False) -> TrainResult:
    """Supervised fine-tuning with OpenRLHF's SFTTrainer; the loss covers responses (+EOS) only.

    Args:
        cfg: A ``TrainerConfig``/``SFTConfig``/``AlignerTrainConfig`` (dataclass or DictConfig).
        model_path: Model directory to start from.
        data_path: JSON Lines file from :func:`w2s.backends.data.write_sft_rows` with the same ``chat``.
        output_dir: Where the trained HF model directory is written (atomically, by rank 0).
        seed: Seed of model init, data order and dropout.
        chat: Chat-message rows formatted by the chat template (True) or raw ``prompt + response`` (False).
        tensorboard_dir: Also write OpenRLHF's TensorBoard logs here (rank 0), under ``sft/``.
        attn_implementation: Attention kernel; flash_attention_2 is used only with CUDA and flash-attn.
        trust_remote_code: Allow models that ship Python code (OpenRLHF always loads with remote code on).

    Returns:
        The run's TrainResult.
    """
    return _run("sft", cfg, model_path, data_path, output_dir, ref_path=None, eval_path=None, seed=seed, chat=chat,
                tensorboard_dir=tensorboard_dir, attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code)


def train_dpo(cfg: Any, model_path: str, ref_path: str, data_path: str, output_dir: str, *, seed: int = 42,
              tensorboard_dir: str | None = None, chat: bool = True, attn_implementation: str = "sdpa",
              trust_remote_code: bool = False) -> TrainResult:
    """Direct preference optimisation with OpenRLHF's DPOTrainer (beta, label smoothing, IPO, NLL from cfg).

    Args:
        cfg: A ``DPOConfig`` (dataclass or DictConfig).
        model_path: Policy to train.
        ref_path: Frozen reference policy.
        data_path: JSON Lines file from :func:`w2s.backends.data.write_pair_rows`.
        output_dir: Where the trained policy is written (atomically, by rank 0).
        seed: Seed of data order.
        tensorboard_dir: Also write OpenRLHF's TensorBoard logs here (rank 0), under ``dpo/``.
        chat: Whether rows are chat-message lists (default) or raw strings.
        attn_implementation: Attention kernel; flash_attention_2 is used only with CUDA and flash-attn.
        trust_remote_code: Allow models that ship Python code.

    Returns:
        The run's TrainResult; metrics hold ``acc``, ``chosen_reward`` and ``rejected_reward`` (means over steps).
    """
    return _run("dpo", cfg, model_path, data_path, output_dir, ref_path=ref_path, eval_path=None, seed=seed,
                chat=chat, tensorboard_dir=tensorboard_dir, attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code)


def train_reward_model(cfg: Any, model_path: str, data_path: str, output_dir: str, *, eval_path: str | None = None,
                       seed: int = 42, tensorboard_dir: str | None = None, chat: bool = True,
                       attn_implementation: str = "sdpa", trust_remote_code: bool = False) -> TrainResult:
    """Train a Bradley-Terry reward model (value head ``score``) with OpenRLHF's RewardModelTrainer.

    Args:
        cfg: A ``RewardModelConfig`` (dataclass or DictConfig).
        model_path: Base model (a causal LM); a value head is added and initialised.
        data_path: JSON Lines file from :func:`w2s.backends.data.write_pair_rows`.
        output_dir: Where the reward model is written; its config.json stores ``value_head_prefix``, ``mean`` and
            ``std`` (from an eval pass over ``eval_path``, or over the training rows when none is given).
        eval_path: Optional held-out pairs for the end-of-epoch evaluation.
        seed: Seed of value-head init and data order.
        tensorboard_dir: Also write OpenRLHF's TensorBoard logs here (rank 0), under ``rm/``.
        chat: Whether rows are chat-message lists (default) or raw strings.
        attn_implementation: Attention kernel; flash_attention_2 is used only with CUDA and flash-attn.
        trust_remote_code: Allow models that ship Python code.

    Returns:
        The run's TrainResult; metrics hold ``acc``, rewards and ``reward_mean``/``reward_std``.
    """
    return _run("rm", cfg, model_path, data_path, output_dir, ref_path=None, eval_path=eval_path, seed=seed,
                chat=chat, tensorboard_dir=tensorboard_dir, attn_implementation=attn_implementation,
                trust_remote_code=trust_remote_code)


__all__ = ["TrainResult", "train_dpo", "train_reward_model", "train_sft"]
