"""OpenRLHF's real SFT, DPO and reward-model trainers on the tiny models, driven through w2s.backends.openrlhf."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from w2s.backends import data as data_files
from w2s.backends import openrlhf as backend
from w2s.config.schema import DPOConfig, RewardModelConfig, SFTConfig
from w2s.errors import ConfigError, DataError
from w2s.ports import rendezvous_port

pytestmark = pytest.mark.slow  # OpenRLHF trainings

ROWS = [(f"What is {i} plus {i + 3}?", f"It is {2 * i + 3}.") for i in range(32)]
PAIRS = [(p, a, "I do not know, sorry.") for p, a in ROWS]


def _cfg(kind=SFTConfig, **over):
    cfg = kind(max_len=96, micro_batch_samples_per_device=4, global_batch_samples=8, **over)
    cfg.optim.lr = 2e-3
    cfg.optim.warmup_ratio = 0.0
    return cfg


def _assert_refit_probe_is_the_saved_models(path: str, *, tolerance: float) -> None:
    """The trainer wrote the saved model's log-probabilities of the refit probe beside it, in its training dtype:
    the saved weights, loaded as an engine loads them, give the same numbers."""
    from transformers import AutoModelForCausalLM

    from w2s.generation.refit import compare, hf_token_logprobs, read_probe

    probe = read_probe(path)
    assert probe is not None and probe["dtype"] == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="eager").eval()
    assert compare(probe["logprobs"], hf_token_logprobs(model, probe["ids"]), tolerance, path) <= tolerance


def _weights(path: str) -> dict[str, torch.Tensor]:
    files = sorted(Path(path).glob("*.safetensors"))
    assert files, f"no safetensors in {path}"
    out: dict[str, torch.Tensor] = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


def _differs(a: str, b: str) -> bool:
    wa, wb = _weights(a), _weights(b)
    shared = set(wa) & set(wb)
    assert shared
    return any(not torch.equal(wa[k].float(), wb[k].float()) for k in shared)


def _assert_loadable_causal_lm(path: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok("What is 1 plus 4?", return_tensors="pt")
    logits = model(**ids).logits
    assert logits.shape[-1] == model.config.vocab_size and torch.isfinite(logits).all()
    assert not Path(path + ".partial").exists()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("orlhf-data")
    assert data_files.write_sft_rows(d / "sft_chat.jsonl", ROWS, chat=True) == 32
    raw = [(f"BEGINNING OF CONVERSATION: USER: {p} ASSISTANT:", f" {a}") for p, a in ROWS]
    assert data_files.write_sft_rows(d / "sft_raw.jsonl", raw, chat=False) == 32
    assert data_files.write_pair_rows(d / "pairs.jsonl", PAIRS) == 32
    return d


@pytest.fixture(scope="module")
def sft_chat(tiny_weak, data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sft") / "model")
    # A DictConfig, as the controller passes it (attribute access like the dataclass).
    cfg = OmegaConf.structured(_cfg(epochs=2))
    return backend.train_sft(cfg, tiny_weak, str(data_dir / "sft_chat.jsonl"), out, chat=True,
                             tensorboard_dir=str(tmp_path_factory.mktemp("tb")), attn_implementation="eager")


def test_sft_chat_rows_train_and_save_a_loadable_model(sft_chat, tiny_weak):
    result = sft_chat
    assert result.steps == 8 and result.samples == 64  # 32 rows / batch 8 x 2 epochs
    # The kernel asked for is the one the trained model was loaded with (not OpenRLHF's flash-attention default).
    assert result.attn_implementation == "eager" and result.world_size == 1
    assert len(result.losses) == result.steps
    assert result.losses[-1] < result.losses[0] - 0.1, result.losses
    assert result.metrics["rows_kept"] == 32 and result.metrics["loss_last"] == result.losses[-1]
    _assert_loadable_causal_lm(result.output_dir)
    assert _differs(result.output_dir, tiny_weak)
    _assert_refit_probe_is_the_saved_models(result.output_dir, tolerance=1e-3)
    # Every saved file has the mode a plain write gives (safetensors' temporary files would leave 0600).
    import os
    from pathlib import Path

    umask = os.umask(0)
    os.umask(umask)
    assert {p.name: p.stat().st_mode & 0o777 for p in Path(result.output_dir).iterdir() if p.is_file()} == {
        p.name: 0o666 & ~umask for p in Path(result.output_dir).iterdir() if p.is_file()}
    print(f"SFT chat: {result.seconds:.1f} s, losses {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")


def test_float32_training_on_cpu_loads_and_trains_in_float32(tiny_weak, data_dir, tmp_path):
    """param_dtype=float32 (for CPUs without native bf16, where bf16 runs ~100x slower): the model is loaded and
    trained in float32 (DeepSpeed's bf16 and fp16 off), and learns."""
    from deepspeed.runtime.engine import DeepSpeedEngine

    seen = {}
    real = DeepSpeedEngine.forward

    def spy(self, *a, **kw):
        seen.setdefault("dtype", next(self.module.parameters()).dtype)
        seen.setdefault("bf16", self.bfloat16_enabled())
        return real(self, *a, **kw)

    DeepSpeedEngine.forward = spy
    try:
        result = backend.train_sft(_cfg(param_dtype="float32"), tiny_weak, str(data_dir / "sft_chat.jsonl"),
                                   str(tmp_path / "out"), chat=True, attn_implementation="eager")
    finally:
        DeepSpeedEngine.forward = real
    assert seen == {"dtype": torch.float32, "bf16": False}
    assert result.losses[-1] < result.losses[0] - 0.1, result.losses
    assert {t.dtype for t in _weights(result.output_dir).values()} == {torch.float32}


def test_sft_raw_rows_mask_the_prompt_and_drop_overlong(tiny_weak, data_dir, tmp_path):
    # The loss covers exactly the response + EOS (OpenRLHF's loss mask, shifted as the trainer uses it).
    from w2s.backends.args import flat_args, namespace
    from w2s.backends.data import build_dataset, load_tokenizer

    tok = load_tokenizer(tiny_weak, "right")
    args = namespace(flat_args(_cfg(), seed=0, micro=1, global_batch=1, chat=False, kind="sft",
                               tensorboard_dir=None, output_dir="unused", attn="sdpa"))
    rows = [json.loads(line) for line in (data_dir / "sft_raw.jsonl").read_text().splitlines()]
    ds = build_dataset("sft", rows[:3], tok, args, type("S", (), {"args": args})())
    for i in range(3):
        input_ids, _, loss_mask = ds[i]
        scored = input_ids[0, 1:][loss_mask[0, :-1].bool()]
        assert tok.decode(scored) == rows[i]["response"] + " " + tok.eos_token
        assert scored[-1].item() == tok.eos_token_id

    # Four rows with very long responses: dropped (and counted), overlong=drop being the default.
    long_rows = [(f"BEGINNING OF CONVERSATION: USER: {p} ASSISTANT:", f" {a}") for p, a in ROWS]
    long_rows[:4] = [(p, a + " and more" * 60) for p, a in long_rows[:4]]
    path = tmp_path / "raw_long.jsonl"
    data_files.write_sft_rows(path, long_rows, chat=False)
    result = backend.train_sft(_cfg(), tiny_weak, str(path), str(tmp_path / "out"), chat=False)
    assert result.metrics["rows_dropped_overlong"] == 4 and result.metrics["rows_kept"] == 28
    assert result.steps == 3 and len(result.losses) == 3  # 28 rows / 8 per step (the partial step is dropped)
    assert result.losses[-1] < result.losses[0]
    _assert_loadable_causal_lm(result.output_dir)
    print(f"SFT raw: {result.seconds:.1f} s, losses {result.losses}")


def test_dpo_moves_the_policy_away_from_the_reference(tiny_weak, data_dir, tmp_path):
    cfg = _cfg(DPOConfig, epochs=2, beta=0.1)
    result = backend.train_dpo(cfg, tiny_weak, tiny_weak, str(data_dir / "pairs.jsonl"), str(tmp_path / "dpo"),
                               attn_implementation="eager")
    assert result.steps == 8 and len(result.losses) == 8 and result.attn_implementation == "eager"
    assert result.losses[0] == pytest.approx(0.6931, abs=0.01)  # policy == reference at the first step
    assert result.losses[-1] < result.losses[0] - 0.05, result.losses
    assert result.metrics["acc"] > 0  # some pairs were ranked right (none at the first step: policy == reference)
    assert result.metrics["chosen_reward"] > result.metrics["rejected_reward"]
    _assert_loadable_causal_lm(result.output_dir)
    assert _differs(result.output_dir, tiny_weak)
    print(f"DPO: {result.seconds:.1f} s, losses {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")


def test_packed_dpo_trains_as_the_padded_one(tiny_weak, data_dir, tmp_path):
    """packing_samples: each micro-batch's rows (of different lengths) as one sequence, the policy's and the
    reference's; the same losses and weights as padded rows, in float32, after the check on the model."""
    cfg, pairs = _cfg(DPOConfig, param_dtype="float32"), str(data_dir / "pairs.jsonl")
    backend.KEPT_REFERENCE.drop()
    padded = backend.train_dpo(cfg, tiny_weak, tiny_weak, pairs, str(tmp_path / "padded"), attn_implementation="sdpa")
    cfg.packing_samples = True
    packed = backend.train_dpo(cfg, tiny_weak, tiny_weak, pairs, str(tmp_path / "packed"), attn_implementation="sdpa")
    backend.KEPT_REFERENCE.drop()
    assert packed.reference_reused  # the padded training's reference, now packing too
    assert "packing_difference" not in padded.metrics and packed.metrics["packing_difference"] < 1e-5
    assert packed.losses == pytest.approx(padded.losses, rel=1e-4) and packed.steps == padded.steps == 4
    a, b = _weights(packed.output_dir), _weights(padded.output_dir)
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


@pytest.mark.parametrize("zero", [{}, {"zero_stage": 3, "ref_offload": True}], ids=["zero0", "zero3-ref-offload"])
def test_the_dpo_reference_is_kept_for_the_next_round_and_trains_as_a_fresh_one(zero, tiny_weak, data_dir, tmp_path,
                                                                                monkeypatch):
    """Round 2 of a run with the initial policy as reference: the trainer rank's kept reference is used, not loaded
    again, and the training is the one a freshly loaded reference gives. Under ZeRO-3 with the reference's
    parameters offloaded (``train.dpo.ref_offload``, what the colocated GPU layouts use) too."""
    from w2s.compat import cpu

    cpu.apply()  # before OpenRLHF's models are imported, as the backend does
    import openrlhf.models
    import openrlhf.utils.deepspeed.deepspeed  # noqa: F401 - binds the real Actor first, whatever ran before

    built = []

    class CountingActor(openrlhf.models.Actor):  # a class: OpenRLHF's strategy checks isinstance(model, Actor)
        def __init__(self, path, *a, **kw):
            built.append(path)
            super().__init__(path, *a, **kw)

    monkeypatch.setattr(openrlhf.models, "Actor", CountingActor)
    cfg, pairs = _cfg(DPOConfig, param_dtype="float32", **zero), str(data_dir / "pairs.jsonl")

    def round_2(out: str):
        built.clear()
        return backend.train_dpo(cfg, str(tmp_path / "round-1"), tiny_weak, pairs, str(tmp_path / out),
                                 attn_implementation="eager")

    backend.KEPT_REFERENCE.drop()
    first = backend.train_dpo(cfg, tiny_weak, tiny_weak, pairs, str(tmp_path / "round-1"), attn_implementation="eager")
    assert not first.reference_reused and built == [tiny_weak, tiny_weak]  # policy, reference
    backend.KEPT_REFERENCE.park()  # what a colocated trainer rank does while another role works
    kept = round_2("kept")
    assert kept.reference_reused and built == [str(tmp_path / "round-1")]  # the policy only
    assert kept.metrics["reference_reused"] == 1 and first.metrics["reference_reused"] == 0
    offload = backend.KEPT_REFERENCE.ref.model.zero_offload_param()  # the DeepSpeed engine's own setting
    assert (offload is not None and str(offload.device) == "cpu") == bool(zero), offload
    backend.KEPT_REFERENCE.drop()
    fresh = round_2("fresh")
    assert not fresh.reference_reused and len(built) == 2
    assert kept.losses == pytest.approx(fresh.losses, rel=1e-5) and kept.metrics["acc"] == fresh.metrics["acc"]
    a, b = _weights(kept.output_dir), _weights(fresh.output_dir)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7) for k in a)
    # Another reference (train.reference=previous: round 1's policy) replaces the kept one.
    built.clear()
    other = backend.train_dpo(cfg, str(tmp_path / "round-1"), str(tmp_path / "round-1"), pairs,
                              str(tmp_path / "previous"), attn_implementation="eager")
    assert not other.reference_reused and len(built) == 2
    backend.KEPT_REFERENCE.drop()


# ZeRO-3: the GPU recipes' stage (the saved weights gathered from their shards), with their packed rows
@pytest.mark.parametrize("zero_stage", [2, 3], ids=["zero2", "zero3-packed"])
def test_reward_model_saves_value_head_and_normalisation(zero_stage, tiny_weak, data_dir, tmp_path, monkeypatch):
    from deepspeed.runtime.engine import DeepSpeedEngine

    from w2s.backends import reference

    destroyed, released = [], []  # engines destroyed; (engine released, destroyed by that release)
    real_destroy = DeepSpeedEngine.destroy
    monkeypatch.setattr(DeepSpeedEngine, "destroy", lambda self: (destroyed.append(self), real_destroy(self)))

    def release(*objects):
        before = len(destroyed)
        reference.release(*objects)
        released.extend((o, any(d is o for d in destroyed[before:])) for o in objects)

    monkeypatch.setattr(backend, "release", release)
    cfg = _cfg(RewardModelConfig, epochs=1, zero_stage=zero_stage, packing_samples=zero_stage == 3)
    result = backend.train_reward_model(cfg, tiny_weak, str(data_dir / "pairs.jsonl"), str(tmp_path / "rm"),
                                        attn_implementation="flash_attention_2")
    # The reward model is the DeepSpeed engine itself (no Actor around it): destroyed by its release, not left to
    # the collector (other tests' engines may be collected meanwhile: only what the release did counts).
    assert [(type(o).__name__, done) for o, done in released] == [("DeepSpeedEngine", True)]
    assert result.steps == 4 and result.losses[-1] < result.losses[0]
    assert ("packing_difference" in result.metrics) == cfg.packing_samples  # checked before training, if packed
    assert result.metrics.get("packing_difference", 0) < 1e-3
    assert result.attn_implementation == "sdpa"  # flash-attention 2 without CUDA: sdpa, not a failed load
    config = json.loads((Path(result.output_dir) / "config.json").read_text())
    assert "auto_map" not in config  # PPO may load w2s's own reward model without trust_remote_code
    assert config["value_head_prefix"] == "score"
    assert isinstance(config["mean"], float) and config["std"] > 0
    assert result.metrics["reward_std"] == pytest.approx(config["std"])
    weights = _weights(result.output_dir)
    assert weights["score.weight"].shape[0] == 1
    # What an RLHF round trains is what the reward-model judge reads: it prefers the chosen answers it learnt.
    from w2s.eval.score_models import ScoreModelJudge, detect_format

    assert detect_format(result.output_dir) == "openrlhf"
    judge = ScoreModelJudge(result.output_dir)
    prompts = [p for p, _, _ in PAIRS]
    chosen = judge.score(prompts, [c for _, c, _ in PAIRS], [])
    rejected = judge.score(prompts, [r for _, _, r in PAIRS], [])
    assert sum(c > r for c, r in zip(chosen, rejected)) > len(PAIRS) / 2
    print(f"RM: {result.seconds:.1f} s, losses {result.losses[0]:.3f} -> {result.losses[-1]:.3f}")


def test_lora_sft_saves_a_merged_full_model(tiny_weak, data_dir, tmp_path):
    cfg = _cfg(epochs=1)
    cfg.lora.rank = 4
    cfg.lora.alpha = 8
    result = backend.train_sft(cfg, tiny_weak, str(data_dir / "sft_chat.jsonl"), str(tmp_path / "lora"))
    assert result.steps == 4
    out = Path(result.output_dir)
    assert not (out / "adapter_config.json").exists()
    assert not any("lora" in k for k in _weights(str(out)))
    _assert_loadable_causal_lm(str(out))
    assert _differs(str(out), tiny_weak)  # the merged adapters changed the linear weights
    # Measured through the adapters before merging, in bf16: the merged weights answer the same within rounding.
    _assert_refit_probe_is_the_saved_models(str(out), tolerance=0.05)


def test_check_loads_accepts_good_rows_and_rejects_bad(tiny_weak, data_dir, tmp_path):
    assert data_files.check_loads(str(data_dir / "sft_chat.jsonl"), tiny_weak, "sft") == 32
    assert data_files.check_loads(str(data_dir / "sft_raw.jsonl"), tiny_weak, "sft", chat=False) == 32
    assert data_files.check_loads(str(data_dir / "pairs.jsonl"), tiny_weak, "dpo") == 32
    assert data_files.check_loads(str(data_dir / "pairs.jsonl"), tiny_weak, "rm") == 32
    # Raw strings in a chat pair file: the classic silent failure of OpenRLHF (every row filtered out).
    bad = tmp_path / "bad_pairs.jsonl"
    data_files.write_pair_rows(bad, PAIRS, chat=False)
    with pytest.raises(DataError, match=r"row 1: field 'prompt' must be a non-empty list"):
        data_files.check_loads(str(bad), tiny_weak, "dpo")
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"prompt": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DataError, match="row 1: missing field 'response'"):
        data_files.check_loads(str(missing), tiny_weak, "sft")
    # Prompts longer than max_len are dropped by OpenRLHF itself: nothing left is an error, not an empty run.
    with pytest.raises(DataError, match="kept none of 32"):
        data_files.check_loads(str(data_dir / "sft_chat.jsonl"), tiny_weak, "sft", max_len=4)


def test_batch_sizes_are_checked_before_training(tiny_weak, data_dir, tmp_path):
    cfg = _cfg()
    cfg.global_batch_samples = 6  # not a multiple of the micro-batch of 4
    with pytest.raises(ConfigError, match="global_batch_samples"):
        backend.train_sft(cfg, tiny_weak, str(data_dir / "sft_chat.jsonl"), str(tmp_path / "x"))



@pytest.mark.slow  # two fresh interpreters importing DeepSpeed: about 25 s on 2 cores
def test_two_ranks_train_dpo_together(tiny_weak, data_dir, tmp_path):
    code = textwrap.dedent("""
        import json, sys
        from w2s.backends import openrlhf as backend
        from w2s.config.schema import DPOConfig
        cfg = DPOConfig(max_len=96, micro_batch_samples_per_device=2, global_batch_samples=8, zero_stage=2)
        cfg.optim.lr = 2e-3
        r = backend.train_dpo(cfg, sys.argv[1], sys.argv[1], sys.argv[2], sys.argv[3])
        print("RESULT " + json.dumps({"steps": r.steps, "losses": r.losses, "metrics": r.metrics}))
    """)
    port = str(rendezvous_port("127.0.0.1"))
    out = tmp_path / "dpo2"
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", code, tiny_weak, str(data_dir / "pairs.jsonl"), str(out)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for proc in procs:
        try:
            output, _ = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, output[-3000:]
        results.append(json.loads(next(line[7:] for line in output.splitlines() if line.startswith("RESULT "))))
    # 32 pairs / global batch 8 = 4 steps, each rank doing 2 micro-batches of 2 per step.
    assert results[0]["steps"] == results[1]["steps"] == 4
    assert results[0]["losses"] == pytest.approx(results[1]["losses"])  # averaged over ranks: the same on both
    assert results[0]["losses"][-1] < results[0]["losses"][0]
    _assert_loadable_causal_lm(str(out))
    assert _differs(str(out), tiny_weak)
