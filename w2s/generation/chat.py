"""Rendering a user message through a model's own chat template."""

from __future__ import annotations

from typing import Any

from w2s.errors import W2SError


def render_chat(tokenizer: Any, user_text: str, system: str | None = None) -> str:
    """The prompt text for one user turn (and an optional system turn), ending with the assistant's header.

    Raises:
        W2SError: if the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "this tokenizer")
        raise W2SError(f"{name} has no chat template; use a raw template (aligner-v1, aligner-v2) or a model "
                       "with a chat template")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
