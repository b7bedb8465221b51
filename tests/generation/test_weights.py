"""Whether a checkpoint can be taken in place is decided by its tensors (names and shapes), not by how its
config.json is spelt."""

from __future__ import annotations

import json
import shutil

from w2s.generation.weights import architecture_change, tensor_specs

# How the hub's Llama configs are written (transformers 4.x): rope_theta and rope_scaling at the top level, no
# head_dim, no attention_bias or mlp_bias. transformers 5 writes rope_parameters, head_dim and the biases.
_HUB_ONLY = {"rope_theta": 10000.0, "rope_scaling": None}
_SAVED_ONLY = ("rope_parameters", "head_dim", "attention_bias", "mlp_bias", "dtype")


def _hub_style(src: str, out) -> str:
    shutil.copytree(src, out)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in _SAVED_ONLY:
        cfg.pop(key, None)
    cfg.update(_HUB_ONLY, torch_dtype="float32", transformers_version="4.31.0")
    cfg_path.write_text(json.dumps(cfg))
    return str(out)


def test_a_hub_config_and_the_same_weights_saved_by_transformers_fit(tiny_strong, tmp_path):
    hub = _hub_style(tiny_strong, tmp_path / "hub")
    saved = json.loads((tmp_path / "hub" / "config.json").read_text())
    assert set(_SAVED_ONLY) & set(json.loads(open(f"{tiny_strong}/config.json").read())) - set(saved)
    assert architecture_change(hub, tiny_strong) == ""
    assert architecture_change(tiny_strong, hub) == ""


def test_another_hidden_size_or_other_tensors_do_not_fit(tiny_strong, tiny_weak, tmp_path):
    from w2s.assets import build_tiny

    wider = build_tiny(tmp_path / "wider", hidden=192, layers=3, heads=4, kv_heads=2, seed=2)  # strong's, but wider
    why = architecture_change(tiny_strong, wider)
    assert why.startswith("30 tensor(s) change shape: ") and "model.embed_tokens.weight [" in why, why
    assert tensor_specs(wider).keys() == tensor_specs(tiny_strong).keys()
    # Fewer layers: other tensors, named.
    assert "9 tensor(s) only in the loaded model (model.layers.2." in architecture_change(tiny_strong, tiny_weak)
    # No weights at all: said so, nothing compared.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "holds no safetensors weights" in architecture_change(tiny_strong, empty)


def test_a_tied_output_layer_saved_or_not_fits(tiny_strong, tmp_path):
    """One writer saves lm_head.weight beside a tied embedding, another does not: the same tensors."""
    import torch
    from safetensors.torch import load_file, save_file

    untied = tmp_path / "untied"
    shutil.copytree(tiny_strong, untied)
    state = load_file(str(untied / "model.safetensors"))
    del state["lm_head.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(untied / "model.safetensors"))
    assert architecture_change(tiny_strong, untied) == ""
    state["model.norm.weight"] = torch.ones(3)
    save_file({k: v.contiguous() for k, v in state.items()}, str(untied / "model.safetensors"))
    assert "model.norm.weight" in architecture_change(tiny_strong, untied)
