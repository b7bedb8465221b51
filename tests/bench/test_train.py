"""`w2s bench train`'s peer: OpenRLHF's CLI given the flags w2s's trainer uses (the benchmark itself runs in
tests/bench/test_bench_cli.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from w2s.backends.args import flat_args
from w2s.bench.train import CLI, Trained, _median_training, check, cli_argv
from w2s.config.schema import DPOConfig, SFTConfig
from w2s.errors import ConfigError


def _flat(kind: str) -> dict:
    section = {"sft": SFTConfig, "dpo": DPOConfig}[kind](param_dtype="bfloat16", packing_samples=True)
    return flat_args(section, seed=7, micro=2, global_batch=4, chat=True, kind=kind, tensorboard_dir=None,
                     output_dir="out", attn="sdpa")


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_every_flag_is_one_the_installed_cli_declares(kind):
    source = Path(importlib.util.find_spec(CLI[kind]).origin).read_text()
    argv = cli_argv(_flat(kind), kind, model="m", data="d.jsonl", ref="r")
    flags = [a for a in argv if a.startswith("--")]
    assert [f for f in flags if f'"{f}"' not in source] == []
    # What makes the two trainings the same: model, data, seed, batch, dtype, learning rate, chat template.
    expected = {"--model.model_name_or_path": "m", "--data.dataset": "d.jsonl", "--train.seed": "7",
                "--train.micro_batch_size": "2", "--train.batch_size": "4", "--ds.param_dtype": "bf16",
                "--ds.attn_implementation": "sdpa"}
    assert {f: argv[argv.index(f) + 1] for f in expected} == expected
    assert "--data.apply_chat_template" in argv and "--ds.packing_samples" in argv
    if kind == "dpo":
        assert argv[argv.index("--ref.model_name_or_path") + 1] == "r"
        assert argv[argv.index("--model.beta") + 1] == str(_flat("dpo")["model.beta"])
    betas = argv.index("--adam.betas")
    assert [float(b) for b in argv[betas + 1:betas + 3]] == list(_flat(kind)["adam.betas"])


def test_what_the_cli_cannot_run_is_refused_at_once():
    with pytest.raises(ConfigError) as e:
        check({"sft": "float32", "dpo": "bfloat32"})
    text = str(e.value)
    assert "train.sft.param_dtype" in text and "train.dpo.param_dtype" in text and "--dtype bfloat16" in text
    check({"sft": "bfloat16", "dpo": "float16"})


def test_repeats_give_medians_the_fit_loops_range_and_the_highest_peak():
    row = _median_training([Trained(30.0, 24.0, 8, 64, 4300.0), Trained(40.0, 36.9, 8, 64, 4400.4),
                            Trained(31.0, 25.0, 8, 64, 4200.0)])
    assert row == {"samples": 64, "steps": 8, "repeats": 3, "seconds_total": 31.0, "seconds_fit": 25.0,
                   "seconds_fit_range": "24.00-36.90", "samples_per_s": 2.56, "peak_mem_mb": 4400}
    assert _median_training([Trained(30.0, 24.0, 8, 64, 4300.0)])["seconds_fit_range"] == "-"
