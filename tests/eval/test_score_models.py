"""Score-model judges: an OpenRLHF reward model (checked against OpenRLHF's own dataset and forward) and safe-rlhf
score models (checked against a hand computation on the PKU conversation format), all on the tiny Llama."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from w2s.errors import W2SError
from w2s.eval.score_models import ScoreModelJudge, detect_format

PROMPTS = ["What is 1 plus 1?", "How do I stay safe online? Please answer in detail, with reasons.", "Hi"]
ANSWERS = ["It is 2.", "Use strong passwords and keep your software updated, because old software has holes.",
           "Hello! How can I help you today?"]


# ---------------------------------------------------------------- OpenRLHF


def _openrlhf():
    """openrlhf.models, importable on a CPU-only machine through w2s's flash_attn import stub."""
    import importlib

    from w2s.compat.cpu import STUBS_DIR

    if importlib.util.find_spec("flash_attn") is None and str(STUBS_DIR) not in sys.path:
        sys.path.append(str(STUBS_DIR))
        importlib.invalidate_caches()
    import openrlhf.models

    return openrlhf.models


def _save_openrlhf_rm(base: str, out: Path, *, prefix: str, normalize: bool) -> Path:
    """A reward model built by OpenRLHF's own loader and saved with the layout its RM trainer writes."""
    from transformers import AutoTokenizer

    models = _openrlhf()
    torch.manual_seed(0)
    model = models.get_llm_for_sequence_regression(base, "reward", init_value_head=True, value_head_prefix=prefix,
                                                   normalize_reward=normalize, attn_implementation="eager")
    with torch.no_grad():  # a larger head than the init's 1/(hidden+1) std, so scores differ visibly
        getattr(model, prefix).weight.normal_(0.0, 0.5)
    model.config.value_head_prefix = prefix  # what cli/train_rm.py stores
    model.config.mean, model.config.std = 0.25, 2.0  # what rm_trainer's eval pass stores
    model.save_pretrained(out)  # DeepspeedStrategy.save_model: save_pretrained, config.json, tokenizer
    model.config.to_json_file(str(out / "config.json"))
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _openrlhf_reference(path: Path, *, normalize: bool, max_len: int) -> list[float]:
    """Rewards from OpenRLHF's RewardDataset (chat template, EOS) and collate_fn (left padding) + its forward."""
    from datasets import Dataset
    from openrlhf.datasets import RewardDataset
    from openrlhf.utils import get_tokenizer

    models = _openrlhf()
    model = models.get_llm_for_sequence_regression(str(path), "reward", normalize_reward=normalize,
                                                   attn_implementation="eager").float().eval()
    # OpenRLHF 0.11.2 fills its non-persistent mean/std buffers in __init__, which transformers 5 runs on the meta
    # device, so they come out uninitialised; set them from config.json as that __init__ means to.
    model.mean[0], model.std[0] = model.config.mean, model.config.std
    tok = get_tokenizer(str(path), model, "left")
    rows = [{"prompt": [{"role": "user", "content": p}], "chosen": [{"role": "assistant", "content": a}],
             "rejected": [{"role": "assistant", "content": a}]} for p, a in zip(PROMPTS, ANSWERS)]
    data_args = SimpleNamespace(prompt_key="prompt", chosen_key="chosen", rejected_key="rejected",
                                apply_chat_template=True, tokenizer_chat_template=None)
    strategy = SimpleNamespace(args=SimpleNamespace(data=data_args))
    dataset = RewardDataset(Dataset.from_list(rows), tok, max_len, strategy, num_processors=1)
    ids, mask, *_ = dataset.collate_fn([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        return model(ids.squeeze(1), mask.squeeze(1)).tolist()


@pytest.fixture(scope="module")
def openrlhf_rm(tiny_weak, tmp_path_factory) -> Path:
    return _save_openrlhf_rm(tiny_weak, tmp_path_factory.mktemp("openrlhf-rm"), prefix="value_head", normalize=True)


def test_openrlhf_scores_match_openrlhf_forward(openrlhf_rm):
    assert detect_format(str(openrlhf_rm)) == "openrlhf"
    judge = ScoreModelJudge(str(openrlhf_rm), batch_size=3)
    assert judge.format == "openrlhf" and judge.device == "cpu"
    scores = judge.score(PROMPTS, ANSWERS, [""] * 3)
    expected = _openrlhf_reference(openrlhf_rm, normalize=True, max_len=1024)
    assert scores == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert len(set(round(s, 4) for s in scores)) == 3  # the texts really score differently
    # Batch size 1 (no padding at all) gives the same scores as the padded batch.
    assert ScoreModelJudge(str(openrlhf_rm), batch_size=1).score(PROMPTS, ANSWERS, [""] * 3) == pytest.approx(
        scores, rel=1e-4, abs=1e-5)


def test_openrlhf_truncation_keeps_eos_last_like_openrlhf(openrlhf_rm):
    judge = ScoreModelJudge(str(openrlhf_rm), max_len=12)
    encoded = [judge._encode(judge._text(p, a)) for p, a in zip(PROMPTS, ANSWERS)]
    assert all(len(ids) == 12 and ids[-1] == judge.tokenizer.eos_token_id for ids in encoded)  # really truncated
    scores = judge.score(PROMPTS, ANSWERS, [""] * 3)
    assert scores == pytest.approx(_openrlhf_reference(openrlhf_rm, normalize=True, max_len=12), rel=1e-4, abs=1e-5)


def test_openrlhf_default_head_without_normalisation(tiny_weak, tmp_path):
    path = _save_openrlhf_rm(tiny_weak, tmp_path / "rm", prefix="score", normalize=False)
    scores = ScoreModelJudge(str(path), batch_size=2).score(PROMPTS, ANSWERS, [""] * 3)
    assert scores == pytest.approx(_openrlhf_reference(path, normalize=False, max_len=1024), rel=1e-4, abs=1e-5)


def test_openrlhf_without_chat_template_says_to_use_pku(openrlhf_rm, tmp_path):
    path = tmp_path / "rm"
    shutil.copytree(openrlhf_rm, path)
    (path / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(W2SError, match=r"eval\.judges\.<name>\.prompt_format.*pku"):
        ScoreModelJudge(str(path))
    judge = ScoreModelJudge(str(path), prompt_format="pku")
    assert judge._text("Q?", "A.") == "BEGINNING OF CONVERSATION: USER: Q? ASSISTANT:A. <|im_end|>"
    assert len(judge.score(PROMPTS, ANSWERS, [""] * 3)) == 3


# ---------------------------------------------------------------- safe-rlhf


def _safe_rlhf_state(base: str, *, bias: bool) -> tuple[dict[str, torch.Tensor], dict]:
    """LlamaForScore's state dict (base under `model.`, `score_head.*`) and config.json, from the tiny Llama."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(base, dtype=torch.float32)
    state = {f"model.{k}": v.clone().contiguous() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    state["score_head.weight"] = torch.randn(1, model.config.hidden_size, generator=gen) * 0.5
    if bias:
        state["score_head.bias"] = torch.tensor([0.75])
    config = model.config.to_dict()
    config.update(architectures=["LlamaForScore"], score_dim=1, score_type="reward", do_normalize=False)
    config["score_bias" if bias else "bias"] = bias  # newer safe-rlhf / beaver-v1.0-era key
    return state, config


def _write_safe_rlhf(base: str, out: Path, state: dict, config: dict, *, layout: str) -> Path:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    out.mkdir(parents=True)
    if layout == "safetensors":
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    elif layout == "sharded":  # the head in the second shard, found through the index
        names = sorted(state)
        shards = {"model-00001-of-00002.safetensors": [n for n in names if not n.startswith("score_head")],
                  "model-00002-of-00002.safetensors": [n for n in names if n.startswith("score_head")]}
        for file, keys in shards.items():
            save_file({k: state[k] for k in keys}, str(out / file), metadata={"format": "pt"})
        weight_map = {k: file for file, keys in shards.items() for k in keys}
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        torch.save(state, out / "pytorch_model.bin")
    (out / "config.json").write_text(json.dumps(config))
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _hand_scores(base: str, state: dict) -> list[float]:
    """Hidden state at the last token of each unpadded PKU text (+ EOS, with special tokens) @ head (+ bias)."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModel.from_pretrained(base, dtype=torch.float32).eval()
    w, b = state["score_head.weight"], state.get("score_head.bias", torch.zeros(1))
    out = []
    for p, a in zip(PROMPTS, ANSWERS):
        text = f"BEGINNING OF CONVERSATION: USER: {p} ASSISTANT:{a}" + tok.eos_token
        ids = tok(text, add_special_tokens=True, return_tensors="pt")["input_ids"]
        assert ids[0, -1].item() == tok.eos_token_id
        with torch.no_grad():
            hidden = model(ids).last_hidden_state[0, -1]
        out.append(float(hidden @ w[0] + b[0]))
    return out


@pytest.mark.parametrize(("bias", "layout"), [(False, "safetensors"), (True, "sharded"), (True, "bin")])
def test_safe_rlhf_scores_match_hand_computation(tiny_weak, tmp_path, monkeypatch, bias, layout):
    state, config = _safe_rlhf_state(tiny_weak, bias=bias)
    path = _write_safe_rlhf(tiny_weak, tmp_path / "score", state, config, layout=layout)
    assert detect_format(str(path)) == "safe-rlhf"
    loads: list[dict] = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    judge = ScoreModelJudge(str(path), batch_size=3)
    assert judge.format == "safe-rlhf"
    scores = judge.score(PROMPTS, ANSWERS, [""] * 3)
    assert scores == pytest.approx(_hand_scores(tiny_weak, state), rel=1e-4, abs=1e-5)
    if layout == "bin":
        assert not list(path.glob("*.safetensors"))  # really loaded from the .bin ...
        assert loads and all(kw.get("weights_only") is True for kw in loads)  # ... with the restricted unpickler
    else:
        assert not loads  # safetensors only: nothing unpickled


def test_safe_rlhf_cost_normalisation_and_detection_by_architecture(tiny_weak, tmp_path):
    state, config = _safe_rlhf_state(tiny_weak, bias=True)
    config.update(score_type="cost", do_normalize=True, mean=[3.0], var=[4.0])
    del config["score_dim"]  # the architecture alone marks a safe-rlhf model
    path = _write_safe_rlhf(tiny_weak, tmp_path / "cost", state, config, layout="safetensors")
    assert detect_format(str(path)) == "safe-rlhf"
    scores = ScoreModelJudge(str(path)).score(PROMPTS, ANSWERS, [""] * 3)
    # A cost is only scaled (its sign keeps meaning "harmful"), by 1 / (sqrt(var) + 1e-8).
    assert scores == pytest.approx([s / 2.0 for s in _hand_scores(tiny_weak, state)], rel=1e-4, abs=1e-5)


def test_safe_rlhf_without_head_names_the_weights(tiny_weak, tmp_path):
    state, config = _safe_rlhf_state(tiny_weak, bias=True)
    state = {k: v for k, v in state.items() if not k.startswith("score_head")}
    path = _write_safe_rlhf(tiny_weak, tmp_path / "headless", state, config, layout="safetensors")
    with pytest.raises(W2SError, match=r"score_head\.weight.*score_head\.bias") as err:
        ScoreModelJudge(str(path))
    assert str(path) in str(err.value)


def test_safe_rlhf_chat_prompt_format_and_bad_options(tiny_weak, tmp_path):
    state, config = _safe_rlhf_state(tiny_weak, bias=False)
    path = _write_safe_rlhf(tiny_weak, tmp_path / "score", state, config, layout="safetensors")
    judge = ScoreModelJudge(str(path), prompt_format="chat")
    # The ChatML turn already ends with EOS, so none is added.
    assert judge._text("Q?", "A.") == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nA.<|im_end|>"
    with pytest.raises(W2SError, match="prompt_format"):
        ScoreModelJudge(str(path), prompt_format="alpaca")
    with pytest.raises(W2SError, match="format"):
        ScoreModelJudge(str(path), fmt="trl")
