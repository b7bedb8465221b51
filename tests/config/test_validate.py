"""w2s.config.validate: cross-field rules, each shown to reject what it must and accept what it may."""

from __future__ import annotations

import json

import pytest

from w2s.config.compose import load_config
from w2s.errors import ConfigError


def _issues(*overrides: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        load_config("tiny/dpo", list(overrides))
    return {i.key: f"{i.problem} | {i.fix}" for i in e.value.issues}


def test_vllm_runs_on_cpu_actors_and_on_whole_or_shared_gpus():
    load_config("tiny/dpo", ["generate.backend=vllm", "correct.backend=vllm", "eval.generate.backend=vllm"])
    load_config("tiny/dpo", ["generate.backend=vllm", "cluster.num_gpus=1", "cluster.generator.num_gpus_per_actor=1",
                             "cluster.corrector.num_gpus_per_actor=1", "cluster.colocate=[generator,corrector]"])
    load_config("tiny/dpo", ["generate.backend=vllm", "generate.tensor_parallel_size=2", "cluster.num_gpus=2",
                             "cluster.generator.num_gpus_per_actor=2"])


def test_roles_share_gpus_through_colocate_never_through_fractions():
    """A fraction would pair a role's own actors up on one GPU (Ray places fractions best-fit): refused, naming
    colocate; a colocated role takes whole GPUs; the seats' CPUs must fit a private instance. All at once."""
    issues = _issues("cluster.num_gpus=1", "cluster.generator.num_gpus_per_actor=0.5",
                     "cluster.colocate=[corrector,trainer,trainer]")
    assert "best-fit" in issues["cluster.generator.num_gpus_per_actor"]
    assert "cluster.colocate=[generator,trainer]" in issues["cluster.generator.num_gpus_per_actor"]
    assert "repeated" in issues["cluster.colocate"]
    issues = _issues("cluster.num_gpus=2", "cluster.colocate=[generator,trainer]",
                     "cluster.generator.num_gpus_per_actor=1")
    assert "a colocated role without GPUs" in issues["cluster.trainer.num_gpus_per_actor"]
    two = ["cluster.num_gpus=2", "cluster.colocate=[generator,trainer]"] + [
        f"cluster.{r}.{k}" for r in ("generator", "trainer") for k in ("num_gpus_per_actor=1", "num_actors=2")]
    issues = _issues(*two, "cluster.num_cpus=3", "cluster.trainer.num_cpus_per_actor=1")
    assert "2 shared GPU(s) x (generator 1 + trainer 1) CPUs = 4 CPUs" in issues["cluster.colocate"]
    load_config("tiny/dpo", [*two, "cluster.num_cpus=4"])


def test_a_tensor_parallel_engine_needs_one_gpu_per_rank_in_its_actor():
    issues = _issues("generate.backend=vllm", "generate.tensor_parallel_size=4", "cluster.num_gpus=8",
                     "cluster.generator.num_gpus_per_actor=2")
    assert "cluster.generator.num_gpus_per_actor=2" in issues["generate.tensor_parallel_size"]
    assert "set cluster.generator.num_gpus_per_actor=4" in issues["generate.tensor_parallel_size"]
    issues = _issues("correct.backend=vllm", "correct.tensor_parallel_size=0")
    assert "must be a whole number >= 1" in issues["correct.tensor_parallel_size"]


def test_batch_sizes_must_be_positive():
    issues = _issues("train.dpo.global_batch_samples=0")
    assert "must be at least 1" in issues["train.dpo.global_batch_samples"]


@pytest.mark.parametrize("role", ["trainer", "generator", "corrector", "judge"])
def test_a_role_with_no_actors_is_a_config_error_not_a_traceback(role):
    """0 trainer ranks once divided the batch size check by zero (a ZeroDivisionError in w2s validate and run)."""
    issues = _issues(f"cluster.{role}.num_actors=0", "train.dpo.global_batch_samples=3")
    assert issues[f"cluster.{role}.num_actors"] == f"must be at least 1 | set cluster.{role}.num_actors=1 (or more)"


def test_config_errors_survive_pickling_as_when_raised_in_an_actor():
    import pickle

    from w2s.errors import ConfigIssue

    err = ConfigError([ConfigIssue("a.b", 0, "must be at least 1", "set a.b=1")], source="trainer")
    back = pickle.loads(pickle.dumps(err))
    assert back.issues == err.issues and str(back) == str(err) and str(back).startswith("1 config error(s) in trainer")


def test_model_paths_are_checked_before_anything_starts(tmp_path):
    assert "does not exist" in _issues(f"model.strong.path={tmp_path / 'nope'}")["model.strong.path"]
    assert "without config.json" in _issues(f"model.strong.path={tmp_path}")["model.strong.path"]
    (tmp_path / "config.json").write_text("{}")
    load_config("tiny/dpo", [f"model.strong.path={tmp_path}", "model.aligner.path=ORG/some-hub-model"])


def test_gpu_roles_on_a_machine_without_gpus_are_refused_unless_declared_logical(monkeypatch):
    from w2s.config import validate

    monkeypatch.setattr(validate, "local_gpus", lambda: 0)
    issues = _issues("cluster.trainer.num_gpus_per_actor=1")
    assert "no GPU" in issues["cluster.trainer.num_gpus_per_actor"]
    assert "cluster.num_gpus=N" in issues["cluster.trainer.num_gpus_per_actor"]
    load_config("tiny/dpo", ["cluster.trainer.num_gpus_per_actor=1", "cluster.num_gpus=1"])  # logical, as planned
    monkeypatch.setattr(validate, "local_gpus", lambda: 8)
    load_config("tiny/dpo", ["cluster.trainer.num_gpus_per_actor=1"])


def test_generation_budget_against_the_models_context_and_prompt_templates(tmp_path):
    import json

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    issues = _issues(f"model.strong.path={model}", "generate.max_prompt_tokens=500", "generate.max_new_tokens=64",
                     "model.strong.prompt_template=Question {question} Answer")
    assert "exceeds the model's context length 512" in issues["generate.max_prompt_tokens + generate.max_new_tokens"]
    assert "{prompt}" in issues["model.strong.prompt_template"]
    load_config("tiny/dpo", [f"model.strong.path={model}", "generate.max_prompt_tokens=400",
                             "generate.max_new_tokens=64", "eval.generate.max_prompt_tokens=400",
                             "model.strong.prompt_template=pku"])


def test_every_negative_count_or_limit_is_refused_at_once():
    """0 means all; a negative limit would silently drop rows (Python slicing), so each is an error, all at once,
    in any section (named judges too)."""
    issues = _issues("eval.max_prompts=-1", "eval.prompts.max_rows=-1", "loop.prompts.max_rows=-1",
                     "loop.prompts_per_round=-1", "cluster.rpc_timeout_s=-5", "eval.judges.similarity.max_len=-1",
                     "interpret.max_pairs=-3")
    assert issues["eval.max_prompts"] == "must not be negative | 0 means all"
    assert issues["eval.prompts.max_rows"] == issues["loop.prompts.max_rows"] == "must not be negative | 0 means all"
    assert issues["loop.prompts_per_round"] == "must not be negative | 0 means all prompts every round"
    assert issues["cluster.rpc_timeout_s"].startswith("must not be negative | 0 means no cap")
    assert issues["interpret.max_pairs"] == "must not be negative | 0 means all"
    assert "eval.judges.similarity.max_len" not in issues  # no declared bound: left to its own checks


@pytest.mark.parametrize("name", ["gpu/smoke", "gpu/alpaca7b-aligner7b-sft", "gpu/alpaca2-13b-aligner7b-dpo",
                                  "gpu/alpaca2-7b-per-round-dpo"])
@pytest.mark.parametrize("method", ["sft", "dpo", "rlhf"])
def test_gpu_recipes_validate_for_every_method(name, method):
    load_config(name, [f"train.method={method}"])


def test_a_hub_models_stated_context_length_bounds_every_budget_before_anything_starts():
    """Alpaca-7B has 2048 tokens of context: the paper's 2048 new tokens after a 1024-token prompt cannot run,
    for generation, evaluation, training or PPO, and validation says so though the model is not downloaded."""
    with pytest.raises(ConfigError) as e:
        load_config("gpu/alpaca7b-aligner7b-rlhf", [
            "generate.max_prompt_tokens=1024", "generate.max_new_tokens=2048", "eval.generate.max_new_tokens=2048",
            "train.rlhf.reward_model.max_len=4096", "train.rlhf.ppo.max_new_tokens=2000"])
    issues = {i.key: i.problem for i in e.value.issues}
    stated = "exceeds the model's context length 2048 (model.strong.context_length of PKU-Alignment/alpaca-7b"
    assert stated in issues["generate.max_prompt_tokens + generate.max_new_tokens"]
    assert stated in issues["eval.generate.max_prompt_tokens + eval.generate.max_new_tokens"]
    assert stated in issues["train.rlhf.reward_model.max_len"]
    assert stated in issues["train.rlhf.ppo.max_prompt_tokens + max_new_tokens"]
    # The Aligner's stated context (Llama-2's 4096) bounds correction the same way.
    with pytest.raises(ConfigError, match=r"correct.max_prompt_tokens \+ correct.max_new_tokens.*context length 4096 "
                                          r"\(model.aligner.context_length"):
        load_config("gpu/alpaca7b-aligner7b-dpo", ["correct.max_prompt_tokens=2048", "correct.max_new_tokens=4096"])


def test_a_run_that_trains_its_aligner_corrects_in_the_template_it_trains():
    with pytest.raises(ConfigError) as e:
        load_config("tiny/per-round", ["correct.template=aligner-v1"])
    issues = {i.key: i.problem for i in e.value.issues}
    assert "differs from aligner.train.template=aligner-v2" in issues["correct.template"]
    load_config("tiny/per-round", ["correct.template=auto"])
    load_config("tiny/per-round", ["correct.template=aligner-v1", "correct.allow_template_mismatch=true"])


def test_a_hub_model_openrlhf_trains_must_be_seen_to_ship_no_code(tmp_path, monkeypatch):
    """OpenRLHF runs a model's own code: for a hub model its cached config.json is read (the hub is not asked);
    with none cached, the recipe must state ships_code=false or trust it."""
    import huggingface_hub.constants

    with pytest.raises(ConfigError) as e:
        load_config("gpu/alpaca7b-aligner7b-dpo", ["model.strong.ships_code=null"])
    issue = next(i for i in e.value.issues if i.key == "model.strong.ships_code")
    assert "PKU-Alignment/alpaca-7b-reproduced is a hub model whose config.json is not here" in issue.problem
    assert "state model.strong.ships_code=false" in issue.fix
    # A cached config.json with auto_map is seen, whatever the recipe states.
    snapshot = tmp_path / "models--PKU-Alignment--alpaca-7b-reproduced" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps({"model_type": "x", "auto_map": {"AutoConfig": "c.C"}}))
    (tmp_path / "models--PKU-Alignment--alpaca-7b-reproduced" / "refs").mkdir()
    (tmp_path / "models--PKU-Alignment--alpaca-7b-reproduced" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"model.strong.trust_remote_code = False: model.strong.path=PKU-Alignment/"
                                          r"alpaca-7b-reproduced ships its own Python code"):
        load_config("gpu/alpaca7b-aligner7b-dpo")


def test_popalign_refuses_to_train_a_policy_that_answers_in_a_raw_prompt_template():
    """Its pairs are chat conversations: trained as they are, a template policy would learn another format."""
    with pytest.raises(ConfigError) as e:
        load_config("tiny/popalign", ["model.strong.prompt_template=pku"])
    issue = next(i for i in e.value.issues if i.key == "model.strong.prompt_template")
    assert "trains its pairs as chat conversations" in issue.problem and "train.dpo.pair_source=extra" in issue.fix
    load_config("tiny/popalign", ["model.strong.prompt_template=pku", "popalign.train_dpo=false"])


def test_a_ceiling_is_trained_as_the_policy_is_and_needs_the_evaluation_pgr_is_made_of():
    with pytest.raises(ConfigError) as e:
        load_config("tiny/dpo", ["loop.ceiling=true", "train.method=rlhf", "eval.compare_to=[previous]"])
    problems = [i.problem for i in e.value.issues if i.key == "loop.ceiling"]
    assert len(problems) == 2  # both said at once
    assert "train.method=rlhf has no ceiling track" in problems[0] and "its floor" in problems[1]
    load_config("tiny/dpo", ["loop.ceiling=true"])


def test_ppo_packs_on_flash_attention_only():
    """OpenRLHF's PPO switches to flash-attention 2 whenever it packs: a policy on another kernel is refused with
    the two ways out; the GPU recipes (flash-attention 2) pack."""
    issues = _issues("train.method=rlhf", "train.rlhf.ppo.packing_samples=true")  # tiny: sdpa
    assert issues["train.rlhf.ppo.packing_samples"] == (
        "OpenRLHF's PPO packs on flash-attention 2 only (it switches to it; model.strong.attn_implementation is "
        "sdpa) | set model.strong.attn_implementation=flash_attention_2 (CUDA and flash-attn), or "
        "train.rlhf.ppo.packing_samples=false")
    load_config("tiny/dpo", ["train.rlhf.ppo.packing_samples=true"])  # read by PPO alone
    for name in ("gpu/alpaca7b-aligner7b-rlhf", "gpu/smoke"):
        cfg = load_config(name, ["train.method=rlhf"])
        assert cfg.train.rlhf.ppo.packing_samples and cfg.model.strong.attn_implementation == "flash_attention_2"


def test_offloaded_frozen_models_need_zero_3():
    """DeepSpeed offloads parameters under ZeRO-3 only: another stage with train.dpo.ref_offload (or PPO's
    ref_reward_offload) is refused, naming both keys; the GPU recipes (ZeRO-3, offloaded) pass, and PopAlign's
    ZeRO-2 recipe turns it off."""
    issues = _issues("train.method=dpo", "train.dpo.ref_offload=true", "train.dpo.zero_stage=2")
    assert issues["train.dpo.ref_offload"] == ("offloads parameters, which DeepSpeed does under ZeRO-3 only "
                                               "(train.dpo.zero_stage is 2) | set train.dpo.zero_stage=3, or "
                                               "train.dpo.ref_offload=false")
    issues = _issues("train.method=rlhf", "train.rlhf.ppo.ref_reward_offload=true")  # PPO's frozen models too
    assert issues["train.rlhf.ppo.ref_reward_offload"] == (
        "offloads parameters, which DeepSpeed does under ZeRO-3 only (train.rlhf.reward_model.zero_stage is 0) | set "
        "train.rlhf.reward_model.zero_stage=3, or train.rlhf.ppo.ref_reward_offload=false")
    for name in ("gpu/alpaca7b-aligner7b-dpo", "gpu/popalign-yi"):
        dpo = load_config(name, ["train.method=dpo"]).train.dpo
        assert dpo.ref_offload == (dpo.zero_stage == 3)
