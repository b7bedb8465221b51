"""Training data for OpenRLHF's SFT, DPO and reward-model trainers: the files w2s writes, their checks, and the
datasets OpenRLHF builds from them.

Data files are JSON Lines written by :func:`write_sft_rows` / :func:`write_pair_rows`:

* ``chat=True``: ``prompt`` is a list of chat messages ending with the user turn, ``response`` / ``chosen`` /
  ``rejected`` a list holding the assistant message; the model's chat template formats them.
* ``chat=False``: plain strings; the text trained on is ``prompt + response`` with no template added (the
  Aligner's raw templates already contain the conversation markers) and an EOS token appended.

In both SFT modes the loss covers only the response and the EOS token: OpenRLHF's ``SFTDataset`` tokenizes the
prompt alone, stores its length ``prompt_ids_len`` and ``get_loss_mask`` sets ``loss_mask[prompt_ids_len - 1 :
-1] = 1``; the trainer uses ``loss_mask[:, :-1]`` on next-token log-probs, so position ``j`` scores token
``j + 1`` and the scored tokens are exactly ``prompt_ids_len ..`` the EOS (checked in the tests).

:func:`check_loads` reads a file as training will; the role services run it on a trainer rank
(:meth:`w2s.roles.trainer.TrainerService.check_loads`), so that the driver never imports OpenRLHF.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from w2s.backends.args import Kind, flat_args, namespace
from w2s.config.schema import DPOConfig, RewardModelConfig, SFTConfig
from w2s.data.files import write_jsonl
from w2s.errors import ConfigError, ConfigIssue, DataError

FIELDS = {"sft": ("prompt", "response"), "dpo": ("prompt", "chosen", "rejected"),
          "rm": ("prompt", "chosen", "rejected")}


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


def read_training_rows(path: str) -> list[dict[str, Any]]:
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


def validate_rows(path: str, rows: list[dict[str, Any]], kind: Kind, chat: bool) -> None:
    """Raise DataError naming the row and field of the first malformed row."""
    for i, row in enumerate(rows, 1):
        for key in FIELDS[kind]:
            if key not in row:
                raise DataError(f"{path}: row {i}: missing field '{key}' (a {kind} row needs "
                                f"{', '.join(FIELDS[kind])})")
            value = row[key]
            if chat and not _is_messages(value):
                raise DataError(f"{path}: row {i}: field '{key}' must be a non-empty list of "
                                f"{{'role', 'content'}} messages for chat data, got {type(value).__name__}; "
                                "write the file with chat=True or train with chat=False")
            if not chat and not isinstance(value, str):
                raise DataError(f"{path}: row {i}: field '{key}' must be a string for raw (chat=False) data, "
                                f"got {type(value).__name__}; write the file with chat=False or train with "
                                "chat=True")


def load_tokenizer(path: str, padding_side: str, trust_remote_code: bool = False) -> Any:
    """The tokenizer as OpenRLHF's get_tokenizer prepares it (pad falls back to EOS); remote code only when asked."""
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


def drop_overlong(rows: list[dict[str, Any]], kind: Kind, tok: Any, max_len: int, chat: bool) -> list[dict]:
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


def build_dataset(kind: Kind, rows: list[dict[str, Any]], tok: Any, args: Any, strategy: Any) -> Any:
    """OpenRLHF's SFTDataset / RewardDataset over in-memory rows (no datasets cache files)."""
    from datasets import Dataset
    from openrlhf.datasets import RewardDataset, SFTDataset

    hf_rows = Dataset.from_list(rows)
    if kind == "sft":
        return SFTDataset(hf_rows, tok, args.data.max_len, strategy, input_template=None, num_processors=1)
    return RewardDataset(hf_rows, tok, args.data.max_len, strategy, input_template=None, is_dpo=kind == "dpo",
                         num_processors=1)


@dataclass
class Data:
    """An OpenRLHF dataset with the counts of what was read, dropped as too long, and filtered by OpenRLHF."""

    dataset: Any
    rows_in: int
    dropped_overlong: int
    filtered: int


def prepare_data(kind: Kind, data_path: str, tok: Any, args: Any, strategy: Any, *, chat: bool,
                 overlong: str) -> Data:
    """Read, check and (per ``overlong``) filter a training file, then build OpenRLHF's dataset over it."""
    rows = read_training_rows(data_path)
    validate_rows(data_path, rows, kind, chat)
    rows_in = len(rows)
    dropped = 0
    if overlong == "drop":
        kept = drop_overlong(rows, kind, tok, args.data.max_len, chat)
        dropped = rows_in - len(kept)
        rows = kept
    elif overlong != "truncate":
        raise ConfigError([ConfigIssue("overlong", overlong, "unknown value", "use truncate or drop")])
    if not rows:
        raise DataError(f"{data_path}: no {kind} rows left out of {rows_in} after dropping {dropped} longer than "
                        f"max_len={args.data.max_len} tokens; raise max_len or use overlong: truncate")
    dataset = build_dataset(kind, rows, tok, args, strategy)
    filtered = len(rows) - len(dataset)  # OpenRLHF drops rows whose prompt alone is >= max_len - 2 tokens
    if len(dataset) == 0:
        raise DataError(f"{data_path}: OpenRLHF kept none of {len(rows)} {kind} rows (prompts of max_len - 2 = "
                        f"{args.data.max_len - 2} tokens or more, or empty responses, are dropped); raise max_len")
    return Data(dataset, rows_in, dropped, filtered)


def check_loads(data_path: str, tokenizer_path: str, kind: Kind, *, chat: bool = True, max_len: int = 2048,
                trust_remote_code: bool = False) -> int:
    """Load a training file with OpenRLHF's own SFTDataset / RewardDataset, as training will.

    Args:
        data_path: JSON Lines file from :func:`write_sft_rows` or :func:`write_pair_rows`.
        tokenizer_path: Model directory whose tokenizer (and chat template) training will use.
        kind: ``sft``, ``dpo`` or ``rm``.
        chat: Whether rows are chat-message lists (True) or raw strings (False).
        max_len: Longest example in tokens.
        trust_remote_code: Load a tokenizer that ships its own code (the model section's flag).

    Returns:
        The number of rows OpenRLHF keeps.

    Raises:
        DataError: a malformed row (named by row and field), or no row kept.
    """
    # Only OpenRLHF's datasets are needed (they import without flash-attn).
    section = {"sft": SFTConfig, "dpo": DPOConfig, "rm": RewardModelConfig}[kind](max_len=max_len)
    args = namespace(flat_args(section, seed=0, micro=1, global_batch=1, chat=chat,
                               kind=kind, tensorboard_dir=None, output_dir="unused", attn="sdpa"))
    tok = load_tokenizer(tokenizer_path, "right" if kind != "rm" else "left", trust_remote_code)
    # The datasets only read strategy.args.
    return len(prepare_data(kind, data_path, tok, args, SimpleNamespace(args=args), chat=chat,
                            overlong="truncate").dataset)


def check_enough(data: Data, data_path: str, micro: int, world: int) -> None:
    """Refuse data that cannot fill one micro-batch on every rank (DeepSpeed would hang or divide by zero)."""
    if len(data.dataset) < micro * world:
        raise DataError(f"{data_path}: {len(data.dataset)} usable rows cannot fill one micro-batch of "
                        f"{micro} sample(s) on each of {world} rank(s); add rows or lower "
                        "micro_batch_samples_per_device")
