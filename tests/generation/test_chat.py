"""w2s.generation.chat: chat templates, prompt templates for models without one, and their errors."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from w2s.errors import W2SError
from w2s.generation.chat import prompt_template_issues, render_chat, render_conversation


@pytest.fixture(scope="module")
def tok(tiny_weak):
    return AutoTokenizer.from_pretrained(tiny_weak)


@pytest.fixture(scope="module")
def no_template(tiny_weak):
    """The same tokenizer without a chat template, as the Alpaca models of the Aligner paper ship."""
    t = AutoTokenizer.from_pretrained(tiny_weak)
    t.chat_template = None
    return t


def test_chat_template_by_default(tok):
    assert render_chat(tok, "Hi", system="Be brief.") == \
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_prompt_templates(no_template):
    assert render_chat(no_template, "How do I stay safe?", template="pku") == \
        "BEGINNING OF CONVERSATION: USER: How do I stay safe? ASSISTANT:"
    assert render_chat(no_template, "Paris is", template="plain") == "Paris is"
    assert render_chat(no_template, "x", template="### Instruction:\n{prompt}\n\n### Response {{json}}:") == \
        "### Instruction:\nx\n\n### Response {json}:"


def test_missing_chat_template_names_the_key(no_template):
    with pytest.raises(W2SError, match=r"no chat template; set model\.strong\.prompt_template to a prompt template"):
        render_chat(no_template, "Hi", key="model.strong.prompt_template")
    with pytest.raises(W2SError, match="has no place for a system message"):
        render_chat(no_template, "Hi", system="Be brief.", template="pku")


def test_prompt_template_issues():
    assert prompt_template_issues("k", "") == [] and prompt_template_issues("k", "pku") == []
    assert prompt_template_issues("k", "Q: {prompt} A:") == []
    assert "has no {prompt} field" in prompt_template_issues("k", "alpaca")[0].problem
    assert "fields other than {prompt}: ['question']" in prompt_template_issues("k", "{question} {prompt}")[0].problem
    assert "not a valid format string" in prompt_template_issues("k", "{prompt")[0].problem
    with pytest.raises(W2SError, match="has no \\{prompt\\} field"):
        render_chat(None, "Hi", template="alpaca")


def test_conversations(tok, no_template):
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
             {"role": "user", "content": "Bye"}]
    assert render_conversation(tok, turns).endswith("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    assert render_conversation(no_template, turns[:1], template="pku") == \
        "BEGINNING OF CONVERSATION: USER: Hi ASSISTANT:"
    with pytest.raises(W2SError, match="3 turns needs the model's chat template"):
        render_conversation(no_template, turns, template="pku")
