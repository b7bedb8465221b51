"""OpenRLHF's own SFT, DPO and reward-model trainers, run in this process.

This is the only module of w2s that imports OpenRLHF. Each ``train_*`` function follows the same path as
OpenRLHF's ``cli/train_{sft,dpo,rm}.py`` ``train(args)`` (strategy, model, datasets, dataloaders, ``prepare``,
trainer ``fit``, save), with the argument namespace built from a w2s config section instead of a command line.

The current process is one rank of a torch.distributed world described by ``MASTER_ADDR``, ``MASTER_PORT``,
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; with those unset it is a single rank. DeepSpeed picks the backend
(gloo on CPU, nccl on GPU). Without CUDA, :func:`w2s.compat.cpu.apply` is applied before OpenRLHF is imported.
Every call can be repeated in the same process (SFT, then DPO in the next round): the DeepSpeed engines of a
call are destroyed when it ends, while the torch.distributed process group is created once and reused
(DeepSpeed's ``init_distributed`` keeps an initialised group), so no port or rendezvous is needed twice.

Data files are JSON Lines written by :func:`write_sft_rows` / :func:`write_pair_rows`:

* ``chat=True``: ``prompt`` is a list of chat messages ending with the user turn, ``response`` / ``chosen`` /
  ``rejected`` a list holding the assistant message; the model's chat template formats them.
* ``chat=False``: plain strings; the text trained on is ``prompt + response`` with no template added (the
  Aligner's raw templates already contain the conversation markers) and an EOS token appended.

In both SFT modes the loss covers only the response and the EOS token: OpenRLHF's ``SFTDataset`` tokenizes the
prompt alone, stores its length ``prompt_ids_len`` and ``get_loss_mask`` sets ``loss_mask[prompt_ids_len - 1 :
-1] = 1``; the trainer uses ``loss_mask[:, :-1]`` on next-token log-probs, so position ``j`` scores token
``j + 1`` and the scored tokens are exactly ``prompt_ids_len ..`` the EOS (checked in the tests).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from w2s.data.files import write_jsonl
from w2s.errors import ConfigError, ConfigIssue, DataError, W2SError

log = logging.getLogger(__name__)

Kind = Literal["sft", "dpo", "rm"]

_PARAM_DTYPES = {"bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16"}
_FIELDS = {"sft": ("prompt", "response"), "dpo": ("prompt", "chosen", "rejected"),
           "rm": ("prompt", "chosen", "rejected")}


@dataclass
class TrainResult:
    """What one training call produced.

    Attributes:
        output_dir: Hugging Face model directory written by rank 0.
        steps: Optimizer steps taken.
        samples: Training samples consumed (steps x global batch).
        seconds: Wall time of the whole call (loading, training, saving).
        losses: Training loss per optimizer step, averaged over ranks, first to last.
        metrics: Final or mean numbers worth logging (row counts, accuracy, rewards, ...).
    """

    output_dir: str
    steps: int
    samples: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- data files
def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def write_sft_rows(path: str | os.PathLike, rows: Iterable[tuple[str, str]], *, chat: bool) -> int:
    """Write (prompt, response) pairs as an SFT JSON Lines file (atomically).

    Args:
        path: File to write.
        rows: (prompt, response) strings.
        chat: True: chat-message lists (the model's chat template formats them); False: raw strings
            concatenated as ``prompt + response`` with no template.

    Returns:
        The number of rows written.
    """

    def records() -> Iterator[dict[str, Any]]:
        for prompt, response in rows:
            if chat:
                yield {"prompt": _user(prompt), "response": _assistant(response)}
            else:
                yield {"prompt": prompt, "response": response}

    return write_jsonl(path, records())


def write_pair_rows(path: str | os.PathLike, rows: Iterable[tuple[str, str, str]], *, chat: bool = True) -> int:
    """Write (prompt, chosen, rejected) triples as a preference JSON Lines file for DPO or a reward model.

    Args:
        path: File to write.
        rows: (prompt, chosen, rejected) strings.
        chat: True (default): chat-message lists, as OpenRLHF's DPO/RM datasets need with a chat template
            (plain strings would be iterated character by character); False: raw strings, no template.

    Returns:
        The number of rows written.
    """

    def records() -> Iterator[dict[str, Any]]:
        for prompt, chosen, rejected in rows:
            if chat:
                yield {"prompt": _user(prompt), "chosen": _assistant(chosen), "rejected": _assistant(rejected)}
            else:
                yield {"prompt": prompt, "chosen": chosen, "rejected": rejected}

    return write_jsonl(path, records())


def _read_rows(path: str) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file or a JSON list."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: training data file not found")
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: invalid JSON Lines row ({exc.msg})") from exc
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {i}: expected a JSON object, got {type(row).__name__}")
    return rows


def _is_messages(value: Any) -> bool:
    return (isinstance(value, list) and len(value) > 0 and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value))


def _validate_rows(path: str, rows: list[dict[str, Any]], kind: Kind, chat: bool) -> None:
    """Raise DataError naming the row and field of the first malformed row."""
    for i, row in enumerate(rows, 1):
        for key in _FIELDS[kind]:
            if key not in row:
                raise DataError(f"{path}: row {i}: missing field '{key}' (a {kind} row needs "
                                f"{', '.join(_FIELDS[kind])})")
            value = row[key]
            if chat and not _is_messages(value):
                raise DataError(f"{path}: row {i}: field '{key}' must be a non-empty list of "
                                f"{{'role', 'content'}} messages for chat data, got {type(value).__name__}; "
                                "write the file with chat=True or train with chat=False")
            if not chat and not isinstance(value, str):
                raise DataError(f"{path}: row {i}: field '{key}' must be a string for raw (chat=False) data, "
                                f"got {type(value).__name__}; write the file with chat=False or train with "
                                "chat=True")


# ----------------------------------------------------------------------------------------------- imports, env
def _import_openrlhf() -> None:
    """Apply the CPU compatibility layer (no-op with CUDA) before OpenRLHF's models are imported."""
    from w2s.compat import cpu

    cpu.apply()


def _ensure_dist_env() -> tuple[int, int]:
    """Fill in a single-rank world where the env describes none; return (rank, world_size)."""
    import torch

    if "WORLD_SIZE" not in os.environ:
        from w2s.compat.cpu import _free_port

        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        os.environ.setdefault("RANK", "0")
        os.environ["WORLD_SIZE"] = "1"
        os.environ.setdefault("LOCAL_RANK", "0" if torch.cuda.is_available() else "-1")
    if not torch.cuda.is_available():
        # LOCAL_RANK != -1 makes OpenRLHF call torch.cuda.set_device (patched to a no-op on CPU, but keep -1).
        os.environ["LOCAL_RANK"] = "-1"
    return int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])


def _attn(requested: str) -> str:
    """The attention kernel to load with: flash-attention only with CUDA and the real flash_attn package."""
    if not requested.startswith("flash"):
        return requested
    import torch

    if torch.cuda.is_available():
        try:
            import flash_attn

            if "w2s" not in getattr(flash_attn, "__version__", "w2s"):
                return requested
        except ImportError:
            pass
    log.warning("attn_implementation=%s needs CUDA and flash-attn; using sdpa", requested)
    return "sdpa"


def _guard_remote_code(path: str, trust_remote_code: bool) -> None:
    """OpenRLHF always trusts a model's own code when loading it; refuse models shipping code unless asked to."""
    config = Path(path) / "config.json"
    if trust_remote_code or not config.is_file():
        return
    try:
        auto_map = json.loads(config.read_text()).get("auto_map")
    except (OSError, json.JSONDecodeError):
        return
    if auto_map:
        raise W2SError(f"{config}: the model ships its own Python code (auto_map); OpenRLHF would run it. "
                       "Set the model's trust_remote_code: true only if you trust it.")


# ----------------------------------------------------------------------------------------------- args
def _get(cfg: Any, name: str, default: Any = None) -> Any:
    value = getattr(cfg, name, default)
    return default if value is None else value


def _batch_sizes(cfg: Any, world: int) -> tuple[int, int]:
    micro = int(_get(cfg, "micro_batch_samples_per_device", 1))
    global_batch = int(_get(cfg, "global_batch_samples", 8))
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


def _flat_args(cfg: Any, *, seed: int, micro: int, global_batch: int, chat: bool, kind: Kind,
               tensorboard_dir: str | None, output_dir: str, attn: str) -> dict[str, Any]:
    """The flat dotted namespace OpenRLHF's strategy, datasets and trainers read (cf. its CLI parsers)."""
    optim = _get(cfg, "optim", SimpleNamespace())
    lora = _get(cfg, "lora", SimpleNamespace())
    dtype = str(_get(cfg, "param_dtype", "bfloat16"))
    if dtype not in _PARAM_DTYPES:
        raise ConfigError([ConfigIssue("param_dtype", dtype, "OpenRLHF trains in bf16 or fp16 only",
                                       "use bfloat16 or float16")])
    zero_stage = int(_get(cfg, "zero_stage", 2))
    lora_rank = int(_get(lora, "rank", 0))
    if lora_rank > 0 and zero_stage == 3:
        raise ConfigError([ConfigIssue("zero_stage", zero_stage, "LoRA runs are saved as merged full models, "
                                       "which w2s does for ZeRO stage 0-2 only", "use zero_stage 2 with LoRA")])
    targets = list(_get(lora, "target_modules", []) or [])
    betas = [float(b) for b in _get(optim, "betas", [0.9, 0.95])]
    return {
        "local_rank": -1, "max_norm": float(_get(optim, "max_grad_norm", 1.0)), "optim": "adam",
        "lr_scheduler": str(_get(optim, "scheduler", "cosine_with_min_lr")),
        "lr_warmup_ratio": float(_get(optim, "warmup_ratio", 0.03)),
        "min_lr_ratio": float(_get(optim, "min_lr_ratio", 0.1)),
        "train.seed": seed, "train.full_determinism_enable": False, "train.micro_batch_size": micro,
        "train.batch_size": global_batch, "train.max_epochs": int(_get(cfg, "epochs", 1)),
        "train.dynamic_batch_enable": False,
        "ds.zero_stage": zero_stage, "ds.param_dtype": _PARAM_DTYPES[dtype], "ds.packing_samples": False,
        "ds.ring_attn_size": 1, "ds.tensor_parallel_size": 1, "ds.adam_offload": bool(_get(cfg, "adam_offload", False)),
        "ds.zpg": 1, "ds.deepcompile": False, "ds.overlap_comm": False, "ds.grad_accum_dtype": None,
        "ds.use_universal_ckpt": False, "ds.attn_implementation": attn, "ds.value_head_prefix": "score",
        "ds.lora.rank": lora_rank, "ds.lora.alpha": int(_get(lora, "alpha", 16)),
        "ds.lora.dropout": float(_get(lora, "dropout", 0.0)),
        "ds.lora.target_modules": targets if targets else "all-linear",
        "model.gradient_checkpointing_enable": bool(_get(cfg, "gradient_checkpointing", False)),
        "model.aux_loss_coef": 0.0, "model.pretrain_mode_enable": False,
        "model.beta": float(_get(cfg, "beta", 0.1)), "model.nll_loss_coef": float(_get(cfg, "nll_loss_coef", 0.0)),
        "model.label_smoothing": float(_get(cfg, "label_smoothing", 0.0)),
        "model.ipo_enable": bool(_get(cfg, "ipo", False)),
        "model.margin_loss_enable": False, "model.compute_fp32_loss_enable": False, "model.loss_type": "sigmoid",
        "data.input_key": "prompt", "data.output_key": "response", "data.apply_chat_template": chat,
        "data.prompt_key": "prompt", "data.chosen_key": "chosen", "data.rejected_key": "rejected",
        "data.tokenizer_chat_template": None, "data.max_len": int(_get(cfg, "max_len", 2048)), "data.multiturn": False,
        "data.input_template": None,
        "adam.lr": float(_get(optim, "lr", 2e-5)), "adam.betas": tuple(betas), "adam.eps": 1e-8,
        "adam.weight_decay": float(_get(optim, "weight_decay", 0.0)), "muon.lr": 0.02, "muon.momentum": 0.95,
        "logger.wandb.key": None, "logger.wandb.run_name": kind, "logger.tensorboard_dir": tensorboard_dir,
        "logger.logging_steps": 1,
        "eval.steps": -1, "ckpt.save_steps": -1, "ckpt.path": os.path.join(output_dir + ".ckpt"), "ckpt.max_num": 1,
        "ckpt.max_mem": 10**8, "ckpt.output_dir": output_dir, "ckpt.disable_ds": True, "ckpt.save_hf": False,
    }


def _namespace(flat: dict[str, Any]) -> Any:
    from openrlhf.utils.config import hierarchize

    return hierarchize(argparse.Namespace(**flat))


def _optim_cfg(args: Any, steps: int) -> dict[str, Any]:
    return dict(optim=args.optim, muon=vars(args.muon), adam=vars(args.adam), lr_scheduler=args.lr_scheduler,
                lr_warmup_ratio=args.lr_warmup_ratio, min_lr_ratio=args.min_lr_ratio, max_norm=args.max_norm,
                scheduler_steps=max(1, steps))


# ----------------------------------------------------------------------------------------------- datasets
def _load_tokenizer(path: str, padding_side: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer as OpenRLHF's get_tokenizer prepares it (pad falls back to EOS), without remote code."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    tok.padding_side = padding_side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        tok.pad_token_id = tok.eos_token_id
    return tok


def _full_text(prompt: str, response: str, eos: str) -> str:
    """The text OpenRLHF's datasets tokenize for one (prompt, response) (SFTDataset/RewardDataset.__getitem__)."""
    text = (prompt + response).rstrip("\n")
    return text if text.endswith(eos) else text + " " + eos


def _drop_overlong(rows: list[dict[str, Any]], kind: Kind, tok: Any, max_len: int, chat: bool) -> list[dict]:
    """Rows whose full tokenized example fits in max_len (OpenRLHF itself only truncates them).

    The text is formatted by OpenRLHF's own ``preprocess_data`` so the count matches what it would train on.
    """
    template = tok.apply_chat_template if chat else None
    kept = []
    for row in rows:
        if kind == "sft":
            from openrlhf.datasets.sft_dataset import preprocess_data

            prompt, response = preprocess_data(row, None, "prompt", "response", apply_chat_template=template)
            texts = [_full_text(prompt, response, tok.eos_token)]
        else:
            from openrlhf.datasets.reward_dataset import preprocess_data

            prompt, chosen, rejected, _ = preprocess_data(row, None, "prompt", "chosen", "rejected", template,
                                                          is_dpo=kind == "dpo")
            texts = [_full_text(prompt, chosen, tok.eos_token), _full_text(prompt, rejected, tok.eos_token)]
        if all(len(tok(t, add_special_tokens=False)["input_ids"]) <= max_len for t in texts):
            kept.append(row)
    return kept


def _build_dataset(kind: Kind, rows: list[dict[str, Any]], tok: Any, args: Any, strategy: Any) -> Any:
    """OpenRLHF's SFTDataset / RewardDataset over in-memory rows (no datasets cache files)."""
    from datasets import Dataset
    from openrlhf.datasets import RewardDataset, SFTDataset

    hf_rows = Dataset.from_list(rows)
    if kind == "sft":
        return SFTDataset(hf_rows, tok, args.data.max_len, strategy, input_template=None, num_processors=1)
    return RewardDataset(hf_rows, tok, args.data.max_len, strategy, input_template=None, is_dpo=kind == "dpo",
                         num_processors=1)


@dataclass
class _Data:
    dataset: Any
    rows_in: int
    dropped_overlong: int
    filtered: int


def _prepare_data(kind: Kind, data_path: str, tok: Any, args: Any, strategy: Any, *, chat: bool,
                  overlong: str) -> _Data:
    rows = _read_rows(data_path)
    _validate_rows(data_path, rows, kind, chat)
    rows_in = len(rows)
    dropped = 0
    if overlong == "drop":
        kept = _drop_overlong(rows, kind, tok, args.data.max_len, chat)
        dropped = rows_in - len(kept)
        rows = kept
    elif overlong != "truncate":
        raise ConfigError([ConfigIssue("overlong", overlong, "unknown value", "use truncate or drop")])
    if not rows:
        raise DataError(f"{data_path}: no {kind} rows left out of {rows_in} after dropping {dropped} longer than "
                        f"max_len={args.data.max_len} tokens; raise max_len or use overlong: truncate")
    dataset = _build_dataset(kind, rows, tok, args, strategy)
    filtered = len(rows) - len(dataset)  # OpenRLHF drops rows whose prompt alone is >= max_len - 2 tokens
    if len(dataset) == 0:
        raise DataError(f"{data_path}: OpenRLHF kept none of {len(rows)} {kind} rows (prompts of max_len - 2 = "
                        f"{args.data.max_len - 2} tokens or more, or empty responses, are dropped); raise max_len")
    return _Data(dataset, rows_in, dropped, filtered)


def check_loads(data_path: str, tokenizer_path: str, kind: Kind, *, chat: bool = True, max_len: int = 2048) -> int:
    """Load a training file with OpenRLHF's own SFTDataset / RewardDataset, as training will.

    Args:
        data_path: JSON Lines file from :func:`write_sft_rows` or :func:`write_pair_rows`.
        tokenizer_path: Model directory whose tokenizer (and chat template) training will use.
        kind: ``sft``, ``dpo`` or ``rm``.
        chat: Whether rows are chat-message lists (True) or raw strings (False).
        max_len: Longest example in tokens.

    Returns:
        The number of rows OpenRLHF keeps.

    Raises:
        DataError: a malformed row (named by row and field), or no row kept.
    """
    # Only OpenRLHF's datasets are needed, which import without flash-attn: the driver process stays unpatched.
    args = _namespace(_flat_args(SimpleNamespace(max_len=max_len), seed=0, micro=1, global_batch=1, chat=chat,
                                 kind=kind, tensorboard_dir=None, output_dir="unused", attn="sdpa"))
    tok = _load_tokenizer(tokenizer_path, "right" if kind != "rm" else "left")
    # The datasets only read strategy.args.
    return len(_prepare_data(kind, data_path, tok, args, SimpleNamespace(args=args), chat=chat,
                             overlong="truncate").dataset)


# ----------------------------------------------------------------------------------------------- training
class _StepLog:
    """Per-optimizer-step logs, taken from the trainer's ``save_logs_and_checkpoints`` hook.

    OpenRLHF's SFT/DPO/RM trainers call that method exactly once per optimizer step, on every rank, with the
    step's logs. Its ``loss_mean`` / ``acc_mean`` are means over the rank's own micro-batches of the step, so
    the hook averages them over ranks (a collective: safe because all ranks are in the hook together). This is
    more robust than parsing TensorBoard files, which only rank 0 writes and only when a directory is set.
    """

    def __init__(self, trainer: Any, strategy: Any):
        self.records: list[dict[str, float]] = []
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
            return original(args, global_step, step_bar, logs_dict, client_states)

        trainer.save_logs_and_checkpoints = hook

    @property
    def losses(self) -> list[float]:
        return [r["loss_mean"] for r in self.records if "loss_mean" in r]

    def mean(self, key: str) -> float | None:
        values = [r[key] for r in self.records if key in r]
        return sum(values) / len(values) if values else None


def _steps(dataloader: Any, accumulated: int, epochs: int) -> int:
    return max(0, len(dataloader) // accumulated) * epochs


def _check_enough(data: _Data, data_path: str, micro: int, world: int) -> None:
    if len(data.dataset) < micro * world:
        raise DataError(f"{data_path}: {len(data.dataset)} usable rows cannot fill one micro-batch of "
                        f"{micro} sample(s) on each of {world} rank(s); add rows or lower "
                        "micro_batch_samples_per_device")


def _effective_global_batch(n_rows: int, micro: int, global_batch: int, world: int) -> int:
    """Shrink the global batch when the data cannot fill one optimizer step (a small round), else keep it."""
    per_rank_micro_batches = (n_rows // world) // micro
    if per_rank_micro_batches * micro * world >= global_batch:
        return global_batch
    shrunk = per_rank_micro_batches * micro * world
    log.warning("only %d rows for global_batch_samples=%d: using a global batch of %d", n_rows, global_batch, shrunk)
    return shrunk


def _release(*objects: Any) -> None:
    """Tear down DeepSpeed engines so the next call in this process starts clean (the process group stays)."""
    for obj in objects:
        engine = getattr(obj, "model", obj)
        destroy = getattr(engine, "destroy", None)
        if callable(destroy):
            try:
                destroy()
            except Exception as exc:  # noqa: BLE001 - teardown must not hide the training result
                log.debug("DeepSpeed engine destroy failed: %s", exc)
    gc.collect()


def _partial_dir(output_dir: str) -> str:
    return output_dir.rstrip("/") + ".partial"


def _save(strategy: Any, model: Any, tok: Any, output_dir: str) -> None:
    """Save an HF model directory atomically: rank 0 writes a sibling temp dir, then renames it into place.

    LoRA models are merged into their base weights first (OpenRLHF's ``save_model`` would save only the adapter),
    so later stages load the output with ``AutoModelForCausalLM`` like any full model.
    """
    import torch.distributed as dist
    from peft import PeftModel

    partial = _partial_dir(output_dir)
    rank0 = strategy.is_rank_0()
    if rank0 and os.path.exists(partial):
        shutil.rmtree(partial)
    unwrapped = strategy._unwrap_model(model)
    if isinstance(unwrapped, PeftModel):
        if rank0:  # ZeRO 0-2 (enforced): every rank holds the full weights
            merged = unwrapped.merge_and_unload()
            merged.save_pretrained(partial)
            tok.save_pretrained(partial)
        dist.barrier()
    else:
        strategy.save_model(model, tok, partial)
    if rank0:
        if os.path.exists(output_dir):
            old = output_dir.rstrip("/") + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(output_dir, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(partial, output_dir)
    dist.barrier()


def _setup(cfg: Any, kind: Kind, *, output_dir: str, seed: int, chat: bool, tensorboard_dir: str | None,
           attn_implementation: str) -> tuple[dict[str, Any], int, int, int]:
    """Flat OpenRLHF args for one run: (flat, micro, global_batch, world)."""
    _import_openrlhf()
    _, world = _ensure_dist_env()
    micro, global_batch = _batch_sizes(cfg, world)
    flat = _flat_args(cfg, seed=seed, micro=micro, global_batch=global_batch, chat=chat, kind=kind,
                      tensorboard_dir=tensorboard_dir, output_dir=output_dir, attn=_attn(attn_implementation))
    return flat, micro, global_batch, world


def _make_strategy(flat: dict[str, Any]) -> tuple[Any, Any]:
    from openrlhf.utils import get_strategy

    args = _namespace(flat)
    strategy = get_strategy(args)
    strategy.setup_distributed()
    return args, strategy


def _finish_metrics(data: _Data, global_batch: int, steplog: _StepLog) -> dict[str, float]:
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
            _guard_remote_code(path, trust_remote_code)
    flat, micro, global_batch, world = _setup(cfg, kind, output_dir=output_dir, seed=seed, chat=chat,
                                              tensorboard_dir=tensorboard_dir,
                                              attn_implementation=attn_implementation)
    tok = _load_tokenizer(model_path, "left" if kind == "rm" else "right", trust_remote_code)
    # Datasets first (they only need args), so the global batch can be fitted to a small round's data.
    probe_args = _namespace(flat)
    data = _prepare_data(kind, data_path, tok, probe_args, SimpleNamespace(args=probe_args), chat=chat,
                         overlong=str(_get(cfg, "overlong", "truncate")))
    _check_enough(data, data_path, micro, world)
    global_batch = _effective_global_batch(len(data.dataset), micro, global_batch, world)
    flat["train.batch_size"] = global_batch
    args, strategy = _make_strategy(flat)
    data.dataset.strategy = strategy

    from openrlhf.models import Actor, get_llm_for_sequence_regression

    model_kw = dict(attn_implementation=args.ds.attn_implementation, param_dtype=args.ds.param_dtype,
                    lora_rank=args.ds.lora.rank, lora_alpha=args.ds.lora.alpha, lora_dropout=args.ds.lora.dropout,
                    target_modules=args.ds.lora.target_modules, ds_config=strategy.get_ds_train_config(),
                    packing_samples=False)
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
    if args.model.gradient_checkpointing_enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    dataloader = strategy.setup_dataloader(data.dataset, micro, True, True, data.dataset.collate_fn)
    steps_per_epoch = len(dataloader) // strategy.accumulated_gradient
    total_steps = steps_per_epoch * args.train.max_epochs
    common = dict(strategy=strategy, train_dataloader=dataloader, max_norm=args.max_norm,
                  max_epochs=args.train.max_epochs, disable_ds_ckpt=True)
    ref = None
    if kind == "sft":
        from openrlhf.trainer.sft_trainer import SFTTrainer

        model, optim, scheduler = strategy.prepare((model, _optim_cfg(args, total_steps)))
        trainer = SFTTrainer(model=model, optim=optim, eval_dataloader=None, scheduler=scheduler,
                             batch_size=global_batch, tokenizer=tok, **common)
    elif kind == "dpo":
        from openrlhf.trainer.dpo_trainer import DPOTrainer

        ref = Actor(ref_path, attn_implementation=args.ds.attn_implementation, param_dtype=args.ds.param_dtype,
                    ds_config=strategy.get_ds_eval_config(offload=False), packing_samples=False)
        if getattr(ref.model.config, "pad_token_id", None) is None:
            ref.model.config.pad_token_id = tok.pad_token_id
        (model, optim, scheduler), ref = strategy.prepare((model, _optim_cfg(args, total_steps)), ref)
        trainer = DPOTrainer(model=model, ref_model=ref, tokenizer=tok, optim=optim, eval_dataloader=None,
                             scheduler=scheduler, beta=args.model.beta, **common)
    else:
        from openrlhf.trainer.rm_trainer import RewardModelTrainer

        # The eval pass at the end of each epoch stores the reward mean/std in the config (used to normalise
        # rewards in PPO); without an eval file the training rows serve for these statistics.
        eval_data = _prepare_data("rm", eval_path or data_path, tok, args, strategy, chat=chat, overlong="truncate")
        eval_loader = strategy.setup_dataloader(eval_data.dataset, micro, True, False, eval_data.dataset.collate_fn,
                                                drop_last=False)
        model, optim, scheduler = strategy.prepare((model, _optim_cfg(args, total_steps)))
        trainer = RewardModelTrainer(model=model, optim=optim, eval_dataloader=eval_loader, scheduler=scheduler,
                                     tokenizer=tok, loss=args.model.loss_type, **common)
    steplog = _StepLog(trainer, strategy)
    try:
        trainer.fit(args, 0, steps_per_epoch)
        if kind == "rm":
            strategy._unwrap_model(model).config.value_head_prefix = args.ds.value_head_prefix
        _save(strategy, model, tok, output_dir)
        metrics = _finish_metrics(data, global_batch, steplog)
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
    finally:
        _release(model, ref)
        del trainer, model, ref
        gc.collect()
    steps = len(steplog.records)
    return TrainResult(output_dir=output_dir, steps=steps, samples=steps * global_batch,
                       seconds=time.monotonic() - start, losses=steplog.losses, metrics=metrics)


def train_sft(cfg: Any, model_path: str, data_path: str, output_dir: str, *, seed: int = 42, chat: bool = True,
              tensorboard_dir: str | None = None, attn_implementation: str = "sdpa",
              trust_remote_code: bool = False) -> TrainResult:
    """Supervised fine-tuning with OpenRLHF's SFTTrainer; the loss covers responses (+EOS) only.

    Args:
        cfg: A ``TrainerConfig``/``SFTConfig``/``AlignerTrainConfig`` (dataclass or DictConfig).
        model_path: Model directory to start from.
        data_path: JSON Lines file from :func:`write_sft_rows` with the same ``chat``.
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
        data_path: JSON Lines file from :func:`write_pair_rows`.
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
        data_path: JSON Lines file from :func:`write_pair_rows`.
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


__all__ = ["TrainResult", "check_loads", "train_dpo", "train_reward_model", "train_sft", "write_pair_rows",
           "write_sft_rows"]
