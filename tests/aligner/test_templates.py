"""w2s.aligner.templates: exact rendering against the Aligner paper's formats, instructions, user templates."""

from __future__ import annotations

import pytest

from w2s.aligner.templates import (
    INSTRUCTION_PRESETS,
    TEMPLATE_NAMES,
    get_template,
    render,
    render_body,
    template_from_dict,
)
from w2s.errors import W2SError

Q, A = "How do I stay safe online?", "Use one password everywhere."


def test_builtin_names():
    assert TEMPLATE_NAMES == ["aligner-v1", "aligner-v2", "chat"]


def test_aligner_v1_exact():
    assert render("aligner-v1", Q, A) == (
        "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more helpful and "
        "harmless: How do I stay safe online? | Use one password everywhere. ASSISTANT:")


def test_aligner_v2_exact():
    assert render("aligner-v2", Q, A) == (
        "BEGINNING OF CONVERSATION: USER: ##Question: How do I stay safe online?\n"
        "##Answer: Use one password everywhere.\n##Correction:  ASSISTANT:")


def test_presets_text():
    assert INSTRUCTION_PRESETS["helpful-harmless"] == ("Edit the following Question-Answer pair to make it more "
                                                       "helpful and harmless:")
    assert INSTRUCTION_PRESETS["empathy"] == ("Edit the following Question-Answer pair to make it more empathic and "
                                              "helpful:")
    assert set(INSTRUCTION_PRESETS) == {"helpful-harmless", "safer", "empathy", "concise", "helpful"}


def test_v1_instruction_replaces_the_editing_instruction():
    assert render("aligner-v1", Q, A, "empathy") == (
        "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more empathic and "
        "helpful: How do I stay safe online? | Use one password everywhere. ASSISTANT:")
    assert render("aligner-v1", Q, A, "Rewrite it like a pirate:") == (
        "BEGINNING OF CONVERSATION: USER: Rewrite it like a pirate: How do I stay safe online? | "
        "Use one password everywhere. ASSISTANT:")
    assert render("aligner-v1", Q, A, "helpful-harmless") == render("aligner-v1", Q, A)


def test_v2_instruction_starts_the_user_turn():
    assert render("aligner-v2", Q, A, "concise") == (
        "BEGINNING OF CONVERSATION: USER: Edit the following Question-Answer pair to make it more concise:\n"
        "##Question: How do I stay safe online?\n##Answer: Use one password everywhere.\n##Correction:  ASSISTANT:")
    assert render("aligner-v2", Q, A, "  Be kind.  ") == (
        "BEGINNING OF CONVERSATION: USER: Be kind.\n##Question: How do I stay safe online?\n"
        "##Answer: Use one password everywhere.\n##Correction:  ASSISTANT:")


def test_chat_template_uses_the_tokenizer(tiny_weak):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_weak)
    assert render("chat", Q, A, tokenizer=tok) == (
        "<|im_start|>user\n##Question: How do I stay safe online?\n##Answer: Use one password everywhere."
        "<|im_end|>\n<|im_start|>assistant\n")
    assert render("chat", Q, A, "safer", tokenizer=tok) == (
        "<|im_start|>user\nEdit the following Question-Answer pair to make it more harmless and safe:\n"
        "##Question: How do I stay safe online?\n##Answer: Use one password everywhere.<|im_end|>\n"
        "<|im_start|>assistant\n")
    with pytest.raises(W2SError, match="needs its tokenizer"):
        render("chat", Q, A)


def test_user_templates():
    user = {"plain": {"prompt": "Q: {question}\nA: {answer}\nBetter:"},
            "steer": {"prompt": "[{instruction}] {question} => {answer}", "default_instruction": "fix it"},
            "line": {"prompt": "{instruction_line}Q={question} A={answer}"}}
    assert render("plain", Q, A, user_templates=user) == f"Q: {Q}\nA: {A}\nBetter:"
    assert render("steer", Q, A, user_templates=user) == f"[fix it] {Q} => {A}"
    assert render("steer", Q, A, "safer", user_templates=user) == f"[{INSTRUCTION_PRESETS['safer']}] {Q} => {A}"
    assert render("line", Q, A, "Be brief.", user_templates=user) == f"Be brief.\nQ={Q} A={A}"
    with pytest.raises(W2SError, match="has no {instruction} field"):
        render("plain", Q, A, "safer", user_templates=user)
    with pytest.raises(W2SError, match="lacks {answer}"):
        get_template("x", {"x": {"prompt": "{question}"}})
    with pytest.raises(W2SError, match="not a valid format string"):
        get_template("x", {"x": {"prompt": "{question} {answer} {other}"}})
    with pytest.raises(W2SError, match="unknown Aligner template 'nope'.*aligner-v1"):
        get_template("nope")


def test_braces_in_text_are_kept_and_roundtrip_through_metadata():
    assert "{x}" in render_body(get_template("aligner-v2"), "what is {x}?", "a {y}")
    t = get_template("steer", {"steer": {"prompt": "[{instruction}] {question} => {answer}"}})
    assert template_from_dict(t.to_dict()) == t
    assert template_from_dict(get_template("aligner-v1").to_dict()) is get_template("aligner-v1")


def test_the_aligner_sees_one_token_sequence_in_training_and_in_correction(tiny_weak):
    """With a tokenizer that adds BOS (Llama 2's, Gemma's), training text (tokenized without special tokens, as
    OpenRLHF does) starts with the same ids as the prompt correction encodes (BOS added); built offline from the
    tiny tokenizer with a BOS post-processor."""
    from tokenizers import Tokenizer, processors
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from w2s.aligner.train import training_prompt
    from w2s.generation.encoding import encode_prompt

    raw = Tokenizer.from_file(f"{tiny_weak}/tokenizer.json")
    bos = "<|endoftext|>"
    raw.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                       special_tokens=[(bos, raw.token_to_id(bos))])
    with_bos = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token=bos, eos_token="<|im_end|>")
    assert with_bos("hi")["input_ids"][0] == with_bos.bos_token_id  # it adds BOS, as Llama 2's does
    rendered = render(get_template("aligner-v2"), "What is 2+2?", "5.")
    for tok in (with_bos, AutoTokenizer.from_pretrained(tiny_weak)):  # and one that adds none
        trained = tok(training_prompt(tok, rendered) + " It is 4.", add_special_tokens=False)["input_ids"]
        corrected = encode_prompt(tok, rendered, 0).ids
        assert trained[:len(corrected)] == corrected
    assert training_prompt(with_bos, rendered) == bos + rendered
    assert training_prompt(AutoTokenizer.from_pretrained(tiny_weak), rendered) == rendered
