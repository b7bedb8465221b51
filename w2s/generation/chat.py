"""Turning a user message into model input: the model's own chat template, or a prompt template.

``model.<role>.prompt_template`` chooses (see :data:`PROMPT_TEMPLATES`):

* empty: the tokenizer's chat template (an error naming the key when the tokenizer has none);
* ``pku``: ``BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:``, the PKU/safe-rlhf format of the Alpaca
  models the Aligner paper corrects, which ship no chat template;
* ``plain``: the prompt as it is;
* any other format string with a ``{prompt}`` field (literal braces doubled: ``{{`` and ``}}``).
"""

from __future__ import annotations

import string
from typing import Any

from w2s.errors import ConfigIssue, W2SError

PROMPT_TEMPLATES: dict[str, str] = {
    "pku": "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:",
    "plain": "{prompt}",
}
TEMPLATE_KEY = "model.<role>.prompt_template"  # how messages name the key when the caller does not say which


def prompt_template_issues(key: str, template: str) -> list[ConfigIssue]:
    """Problems with a ``prompt_template`` value: not empty, not a preset, and not a ``{prompt}`` format string."""
    if not template or template in PROMPT_TEMPLATES:
        return []
    fix = (f"use one of {sorted(PROMPT_TEMPLATES)}, empty for the tokenizer's chat template, or a format string "
           "with {prompt} (double literal braces)")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        return [ConfigIssue(key, template, f"is not a valid format string ({e})", fix)]
    if "prompt" not in fields or any(f != "prompt" for f in fields):
        others = sorted({f or "{}" for f in fields if f != "prompt"})
        problem = "has no {prompt} field" if "prompt" not in fields else f"has fields other than {{prompt}}: {others}"
        return [ConfigIssue(key, template, problem, fix)]
    return []


def _format(template: str, user_text: str, key: str) -> str:
    issues = prompt_template_issues(key, template)
    if issues:
        raise W2SError(str(issues[0]))
    return PROMPT_TEMPLATES.get(template, template).format(prompt=user_text)


def render_chat(tokenizer: Any, user_text: str, system: str | None = None, *, template: str = "",
                key: str = TEMPLATE_KEY) -> str:
    """The prompt text for one user turn (and an optional system turn), ending where the assistant answers.

    Args:
        tokenizer: the model's tokenizer (its chat template is used when ``template`` is empty).
        user_text: the user's message.
        system: a system message; only chat templates have a place for one.
        template: a ``prompt_template`` value (see the module docstring); empty: the chat template.
        key: the config key ``template`` comes from, for error messages.

    Raises:
        W2SError: the tokenizer has no chat template and no prompt template is set; a system message with a
            prompt template; an invalid prompt template.
    """
    if template:
        if system:
            raise W2SError(f"{key}={template!r} has no place for a system message; use a model with a chat "
                           f"template (and leave {key} empty) or drop the system message")
        return _format(template, user_text, key)
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "this tokenizer")
        raise W2SError(f"{name} has no chat template; set {key} to a prompt template (pku for the PKU/Alpaca "
                       "format `BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:`, plain, or a format string "
                       "with {prompt}), or use a model with a chat template")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_conversation(tokenizer: Any, messages: list[dict[str, str]], *, template: str = "",
                        key: str = TEMPLATE_KEY) -> str:
    """A whole message list (ending with a user turn) as prompt text.

    With a chat template every turn is rendered; a prompt template has a single user turn only, so a longer
    conversation raises :class:`W2SError` naming ``key``.
    """
    if template or not getattr(tokenizer, "chat_template", None):
        if len(messages) != 1 or messages[0].get("role") != "user":
            raise W2SError(f"a conversation of {len(messages)} turns needs the model's chat template, but "
                           + (f"{key}={template!r} renders one user turn only" if template else
                              f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')} has none")
                           + "; use a model with a chat template or single-turn prompts")
        return render_chat(tokenizer, messages[0]["content"], template=template, key=key)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
