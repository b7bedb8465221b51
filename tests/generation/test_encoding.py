"""w2s.generation.encoding: shared prompt encoding, per-request seeds, the model's context length."""

from __future__ import annotations

import json
import logging

import pytest
from tokenizers import processors
from transformers import AutoTokenizer

from w2s.generation.encoding import (
    EncodedPrompt,
    context_issues,
    context_length,
    encode_prompt,
    eos_token_ids,
    log_truncation,
    request_seeds,
)


@pytest.fixture(scope="module")
def tok(tiny_weak):
    return AutoTokenizer.from_pretrained(tiny_weak)


@pytest.fixture(scope="module")
def bos_tok(tiny_weak):
    """The tiny tokenizer made to add BOS like Llama's (its own adds no special token)."""
    t = AutoTokenizer.from_pretrained(tiny_weak)
    t.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{t.bos_token} $A", special_tokens=[(t.bos_token, t.bos_token_id)])
    return t


def test_bos_added_unless_the_text_starts_with_it(bos_tok):
    words = bos_tok("Paris is", add_special_tokens=False)["input_ids"]
    assert encode_prompt(bos_tok, "Paris is", 0).ids == [bos_tok.bos_token_id, *words]
    # A chat template writes the BOS itself: it must not be doubled.
    assert encode_prompt(bos_tok, bos_tok.bos_token + "Paris is", 0).ids == [bos_tok.bos_token_id, *words]


def test_left_truncation(tok):
    text = "The weak aligner corrects the answer of the strong model so that it is more helpful and harmless."
    full = encode_prompt(tok, text, 0)
    cut = encode_prompt(tok, text, 5)
    assert cut == EncodedPrompt(full.ids[-5:], True)
    assert encode_prompt(tok, text, len(full.ids)) == EncodedPrompt(full.ids, False)


def test_truncation_is_logged_and_counted(caplog):
    encoded = [EncodedPrompt([1, 2], True), EncodedPrompt([3], False), EncodedPrompt([4, 5], True)]
    with caplog.at_level(logging.WARNING):
        assert log_truncation(logging.getLogger("w2s.test"), encoded, 2) == 2
    assert "2 of 3 prompts were longer than max_prompt_tokens=2" in caplog.text
    caplog.clear()
    assert log_truncation(logging.getLogger("w2s.test"), encoded[1:2], 2) == 0 and not caplog.text


def test_eos_ids_join_generation_config_and_tokenizer(tok):
    assert eos_token_ids(tok, None) == [tok.eos_token_id]
    assert eos_token_ids(tok, [7, tok.eos_token_id]) == sorted({7, tok.eos_token_id})


def test_request_seeds_depend_on_the_prompt_only():
    a, b, c = [1, 2, 3], [1, 2, 4], [9]
    seeds = request_seeds(5, [a, b, c])
    assert len(set(seeds)) == 3 and all(0 <= s < 2**63 for s in seeds)
    assert request_seeds(5, [c, a]) == [seeds[2], seeds[0]]  # another batch, another order: same seeds
    assert request_seeds(6, [a]) != [seeds[0]]
    # Repeats of a prompt get their own seeds; the first copy keeps the prompt's seed.
    repeated = request_seeds(5, [a, b, a, a])
    assert repeated[:2] == seeds[:2] and len(set(repeated)) == 4


def _write(folder, config, tokenizer_config=None):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    if tokenizer_config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


def test_context_length_sources(tmp_path, tiny_weak):
    assert context_length(tiny_weak) == (2048, "config.json max_position_embeddings")
    assert context_length(_write(tmp_path / "gpt2", {"n_positions": 1024})) == (1024, "config.json n_positions")
    nested = _write(tmp_path / "vlm", {"text_config": {"max_position_embeddings": 4096, "seq_length": 8192}})
    assert context_length(nested) == (4096, "config.json max_position_embeddings")
    linear = _write(tmp_path / "linear", {"max_position_embeddings": 2048,
                                          "rope_scaling": {"rope_type": "linear", "factor": 2.0}})
    assert context_length(linear)[0] == 4096
    llama3 = _write(tmp_path / "llama3", {"max_position_embeddings": 131072,
                                          "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})
    assert context_length(llama3)[0] == 131072  # already the stretched length
    tok_limit = _write(tmp_path / "tok", {"max_position_embeddings": 4096}, {"model_max_length": 512})
    assert context_length(tok_limit) == (512, "tokenizer_config.json model_max_length")
    assert context_length(_write(tmp_path / "none", {"hidden_size": 8})) is None


def test_context_issues_name_both_keys_and_the_fix(tiny_weak):
    assert context_issues("generate", tiny_weak, 1024, 1024) == []
    [issue] = context_issues("generate", tiny_weak, 2000, 256)
    assert issue.key == "generate.max_prompt_tokens + generate.max_new_tokens"
    assert "context length 2048" in issue.problem and "max_position_embeddings" in issue.problem
    assert "generate.max_prompt_tokens to at most 1792" in issue.fix
    assert context_issues("", "org/some-hub-model", 10**6, 10**6) == []  # not a local directory: unknown
