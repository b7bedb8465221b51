"""What an engine returns for one prompt (a module of its own: the engines and the package both need it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Generation:
    """One completion: its text, token counts and why it stopped (``stop`` at EOS, ``length`` at the limit).

    ``prompt_tokens`` counts the prompt as the model saw it, after truncation; ``prompt_truncated`` says whether
    it was cut to ``max_prompt_tokens``.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    prompt_truncated: bool = False
