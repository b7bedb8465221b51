"""Offline assets: the tiny models build, reload with every Auto class, and build once under concurrency."""

from __future__ import annotations

import subprocess
import sys

import pytest

from w2s.assets import asset_dir, resolve_model_path
from w2s.cli import main


def test_tiny_pair_shares_a_tokenizer_and_reloads(tiny_weak, tiny_strong):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    weak, strong = AutoTokenizer.from_pretrained(tiny_weak), AutoTokenizer.from_pretrained(tiny_strong)
    text = "Edit the following Question-Answer pair"
    assert weak(text)["input_ids"] == strong(text)["input_ids"]
    assert weak.eos_token == "<|im_end|>" and weak.pad_token == "<|pad|>"
    rendered = weak.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                        add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    w, s = AutoConfig.from_pretrained(tiny_weak), AutoConfig.from_pretrained(tiny_strong)
    assert s.hidden_size > w.hidden_size and s.hidden_size // s.num_attention_heads >= 32
    model = AutoModelForCausalLM.from_pretrained(tiny_strong)
    out = model.generate(**weak("hello", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert out.shape[1] > 1


def test_asset_prefix_resolves_to_the_cache(tiny_weak):
    assert resolve_model_path("asset:tiny-weak") == tiny_weak == str(asset_dir("tiny-weak"))
    assert resolve_model_path("some/hub-name") == "some/hub-name"


def test_cli_builds_a_custom_tiny_model(tmp_path):
    assert main(["assets", "tiny", "--out", str(tmp_path / "m"), "--hidden", "96", "--heads", "3",
                 "--kv-heads", "1", "--layers", "1"]) == 0
    import json

    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (96, 1)


@pytest.mark.slow  # builds an asset in several processes
def test_concurrent_builds_build_once(tmp_path):
    code = ("import os; os.environ['W2S_CACHE'] = {cache!r}; from w2s.assets import ensure_asset; "
            "print(ensure_asset('tiny-weak', progress=lambda m: print('BUILT')))")
    procs = [subprocess.Popen([sys.executable, "-c", code.format(cache=str(tmp_path))], stdout=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(o.count("BUILT") for o in outs) == 1
    assert len({o.strip().splitlines()[-1] for o in outs}) == 1
