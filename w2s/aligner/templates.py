"""Aligner prompt templates and controllable-correction instructions.

Builtin templates (the strings are exactly those of the Aligner paper's code and released checkpoint):

* ``aligner-v1``: the format of the released ``aligner-7b-v1.0`` checkpoint::

      BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful and
      harmless: {question} | {answer} ASSISTANT:

* ``aligner-v2``: the current Aligner repository format (two spaces before ``ASSISTANT:``)::

      BEGINNING OF CONVERSATION: USER: ##Question: {question}\\n##Answer: {answer}\\n##Correction:  ASSISTANT:

* ``chat``: the model's own chat template; the user turn is ``##Question: {question}\\n##Answer: {answer}``
  and the prompt ends with the template's generation prompt (needs the model's tokenizer).

Where an instruction goes (``instruction`` is a preset name from :data:`INSTRUCTION_PRESETS` or free text):

* ``aligner-v1`` and user templates with an ``{instruction}`` field: the instruction *replaces* the editing
  instruction (``Edit the following Question-Answer pair to make it more helpful and harmless:``).
* ``aligner-v2``: the instruction and a newline are inserted at the start of the user turn, right after
  ``USER: ``, before ``##Question:``.
* ``chat``: the instruction and a newline are the first line of the user message, before ``##Question:``.
* User templates without ``{instruction}`` cannot take one (an error says so).

An empty instruction means the template's default (for v1: the helpful-and-harmless sentence; for
v2 and chat: none).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from w2s.errors import W2SError

EDIT_PREFIX = "Edit the following Question-Answer pair to make it more"

INSTRUCTION_PRESETS: dict[str, str] = {
    "helpful-harmless": f"{EDIT_PREFIX} helpful and harmless:",
    "safer": f"{EDIT_PREFIX} harmless and safe:",
    "empathy": f"{EDIT_PREFIX} empathic and helpful:",
    "concise": f"{EDIT_PREFIX} concise:",
    "helpful": f"{EDIT_PREFIX} helpful:",
}

PROMPT_BEGIN = "BEGINNING OF CONVERSATION: "


@dataclass(frozen=True)
class Template:
    """A named Aligner prompt template.

    Attributes:
        name: registry name.
        prompt: a format string over ``{question}``, ``{answer}`` and ``{instruction}`` (raw templates), or the
            user message of a ``chat`` template.
        default_instruction: the instruction used when none is given.
        instruction_mode: ``replace`` (``{instruction}`` in the prompt is the editing instruction) or
            ``prepend`` (a given instruction plus a newline starts the user turn at ``{instruction_line}``).
        chat: render through the tokenizer's chat template (the prompt is the user message).
    """

    name: str
    prompt: str
    default_instruction: str = ""
    instruction_mode: str = "replace"
    chat: bool = False

    @property
    def takes_instruction(self) -> bool:
        return "{instruction" in self.prompt

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "prompt": self.prompt, "default_instruction": self.default_instruction,
                "instruction_mode": self.instruction_mode, "chat": self.chat}


BUILTIN_TEMPLATES: dict[str, Template] = {
    "aligner-v1": Template(
        "aligner-v1", PROMPT_BEGIN + "USER: {instruction} {question} | {answer} ASSISTANT:",
        default_instruction=INSTRUCTION_PRESETS["helpful-harmless"], instruction_mode="replace"),
    "aligner-v2": Template(
        "aligner-v2", PROMPT_BEGIN + "USER: {instruction_line}##Question: {question}\n##Answer: {answer}\n"
        "##Correction:  ASSISTANT:", instruction_mode="prepend"),
    "chat": Template("chat", "{instruction_line}##Question: {question}\n##Answer: {answer}",
                     instruction_mode="prepend", chat=True),
}
TEMPLATE_NAMES: list[str] = list(BUILTIN_TEMPLATES)


def resolve_instruction(instruction: str) -> str:
    """A preset name becomes its text; anything else is free text, used as given (stripped)."""
    instruction = (instruction or "").strip()
    return INSTRUCTION_PRESETS.get(instruction, instruction)


def _user_template(name: str, spec: Any) -> Template:
    get = spec.get if isinstance(spec, Mapping) else lambda k, d=None: getattr(spec, k, d)
    prompt = get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise W2SError(f"aligner.templates.{name}.prompt: must be a format string with {{question}} and {{answer}}")
    for needed in ("{question}", "{answer}"):
        if needed not in prompt:
            raise W2SError(f"aligner.templates.{name}.prompt: lacks {needed}; write it where the text goes")
    try:
        prompt.format(question="", answer="", instruction="", instruction_line="")
    except (KeyError, IndexError, ValueError) as e:
        raise W2SError(f"aligner.templates.{name}.prompt: not a valid format string ({e!r}); fields are "
                       "{question}, {answer}, {instruction}; write literal braces as {{ and }}") from None
    mode = "prepend" if "{instruction_line}" in prompt else "replace"
    return Template(name, prompt, default_instruction=str(get("default_instruction", "") or ""),
                    instruction_mode=mode, chat=bool(get("chat", False)))


def get_template(name: str, user_templates: Mapping[str, Any] | None = None) -> Template:
    """A template by name: a builtin, or one from config ``aligner.templates`` (which may not shadow builtins).

    Raises:
        W2SError: for an unknown name (listing the known ones) or an invalid user template.
    """
    if name in BUILTIN_TEMPLATES:
        return BUILTIN_TEMPLATES[name]
    user_templates = user_templates or {}
    if name in user_templates:
        return _user_template(name, user_templates[name])
    known = TEMPLATE_NAMES + sorted(user_templates)
    raise W2SError(f"unknown Aligner template {name!r}; known: {', '.join(known)} (define others under "
                   "aligner.templates)")


def template_from_dict(spec: Mapping[str, Any]) -> Template:
    """A template saved with :meth:`Template.to_dict` (e.g. from an Aligner's metadata)."""
    name = str(spec.get("name", "saved"))
    if name in BUILTIN_TEMPLATES and spec.get("prompt") == BUILTIN_TEMPLATES[name].prompt:
        return BUILTIN_TEMPLATES[name]
    return Template(name, str(spec["prompt"]), str(spec.get("default_instruction", "")),
                    str(spec.get("instruction_mode", "replace")), bool(spec.get("chat", False)))


def render_body(template: Template, question: str, answer: str, instruction: str = "") -> str:
    """The template's own text for one pair: the whole prompt of a raw template, the user message of a chat one.

    Raises:
        W2SError: an instruction for a template that cannot take one.
    """
    text = resolve_instruction(instruction) or resolve_instruction(template.default_instruction)
    if text and not template.takes_instruction:
        raise W2SError(f"Aligner template {template.name!r} has no {{instruction}} field, so it cannot take the "
                       f"instruction {text[:60]!r}; add {{instruction}} to its prompt or drop the instruction")
    return template.prompt.format(question=question, answer=answer, instruction=text,
                                  instruction_line=f"{text}\n" if text else "")


def render(template: Template | str, question: str, answer: str, instruction: str = "",
           tokenizer: Any = None, user_templates: Mapping[str, Any] | None = None) -> str:
    """The exact prompt text the Aligner sees for one (question, answer) pair.

    Args:
        template: a :class:`Template` or a template name.
        question: the user's question.
        answer: the upstream model's answer to correct.
        instruction: a preset name, free text, or empty for the template's default (see the module docstring
            for where it goes).
        tokenizer: the Aligner's tokenizer; required by chat templates.
        user_templates: config ``aligner.templates``, when ``template`` is a name.

    Raises:
        W2SError: an instruction for a template that cannot take one, or a chat template without a tokenizer.
    """
    if isinstance(template, str):
        template = get_template(template, user_templates)
    body = render_body(template, question, answer, instruction)
    if not template.chat:
        return body
    if tokenizer is None:
        raise W2SError(f"Aligner template {template.name!r} uses the model's chat template and needs its tokenizer")
    from w2s.generation.chat import render_chat

    return render_chat(tokenizer, body)
