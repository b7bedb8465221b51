"""Preference rows as Aligner triples (the paper's §4: Aligner_k is trained on round k of a preference dataset).

A row (prompt, chosen, rejected), as in HH-RLHF or UltraFeedback, or (prompt, response_0, response_1, label) as in
PKU-SafeRLHF, becomes question = prompt, answer = rejected, correction = chosen: the Aligner learns to turn the
worse response into the better one. Responses given as chat-message lists count by their last message. Rows the
user asks for (``identity``: chosen equal to rejected, or both responses acceptable) become identity rows (answer
-> answer) for the warm-up instead of corrections.
"""

from __future__ import annotations

from typing import Any

from w2s.errors import DataError


def _text(value: Any, where: str, key: str) -> str:
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        value = value[-1].get("content")  # a conversation: the response is its last message
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: field {key!r} must be a non-empty string (or messages ending in one)")
    return value


def preference_to_triple(row: dict[str, Any], cfg: Any, where: str) -> tuple[str, str, str, bool]:
    """(question, answer, correction, identity) of one preference row under a ``TripleDataConfig``."""
    question = _text(row.get(cfg.question_key), where, cfg.question_key)
    acceptable = False
    if cfg.response_keys:
        if len(cfg.response_keys) != 2 or not cfg.label_key:
            raise DataError(f"{where}: response_keys needs two fields and label_key (e.g. [response_0, response_1] "
                            "with better_response_id)")
        label = row.get(cfg.label_key)
        if label not in (0, 1, "0", "1"):
            raise DataError(f"{where}: field {cfg.label_key!r} must be 0 or 1, got {label!r}")
        better = int(label)
        chosen = _text(row.get(cfg.response_keys[better]), where, cfg.response_keys[better])
        rejected = _text(row.get(cfg.response_keys[1 - better]), where, cfg.response_keys[1 - better])
        if cfg.acceptable_keys:
            acceptable = all(row.get(k) is True for k in cfg.acceptable_keys)
    else:
        chosen = _text(row.get(cfg.chosen_key), where, cfg.chosen_key)
        rejected = _text(row.get(cfg.rejected_key), where, cfg.rejected_key)
    equal = chosen.strip() == rejected.strip()
    identity = (cfg.identity in ("equal", "both") and equal) or (cfg.identity in ("acceptable", "both") and acceptable)
    return question, (chosen if identity else rejected), chosen, identity
