"""Resource arithmetic of `w2s launch`: what fits on N nodes x G GPUs, and refusals that show their numbers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from w2s.config.compose import RECIPES_DIR, load_config
from w2s.launch.resources import (
    Request,
    check_resources,
    params_from_config,
    train_bytes_per_param,
    training_memory_gb,
)

# As `w2s launch` loads recipes (joining a cluster), minus the tiny base's local-instance CPU count.
JOINED = ["cluster.address=auto", "cluster.num_cpus=0"]


def stated_layout(path: Path) -> tuple[int, int]:
    """Nodes x GPUs a recipe states: its `w2s launch slurm ... --nodes N --gpus-per-node G` line, else the
    "N GPUs" (or ">= 1 GPU") of its first comment line, on one node."""
    text = path.read_text()
    launch = re.search(r"--nodes (\d+) --gpus-per-node (\d+)", text)
    if launch:
        return int(launch[1]), int(launch[2])
    gpus = re.search(r"(\d+) GPUs?\b", text.splitlines()[0])
    assert gpus, f"{path} states no layout"
    return 1, int(gpus[1])


# Every GPU and Aligner recipe with the nodes x GPUs it says it runs on.
STATED_LAYOUTS = {str(p.relative_to(RECIPES_DIR).with_suffix("")): stated_layout(p)
                  for sub in ("gpu", "aligner") for p in sorted((RECIPES_DIR / sub).glob("[!_]*.yaml"))}
DPO_70B = [*JOINED, "train.dpo.global_batch_samples=64", "train.method=dpo", "model.strong.params_b=70",
           "train.dpo.zero_stage=3", "cluster.trainer.num_actors=8", "cluster.trainer.num_gpus_per_actor=1"]


def test_zero_stages_follow_the_zero_paper():
    # 2 + 2 + 12 bytes per parameter, sharded progressively (Rajbhandari et al. 2020, Fig. 1; N = 64).
    assert train_bytes_per_param(0, 64) == 16.0
    assert train_bytes_per_param(1, 64) == pytest.approx(4 + 12 / 64)
    assert train_bytes_per_param(2, 64) == pytest.approx(2 + 14 / 64)
    assert train_bytes_per_param(3, 64) == pytest.approx(16 / 64)
    assert train_bytes_per_param(3, 8, adam_offload=True) == pytest.approx(4 / 8)
    assert train_bytes_per_param(2, 8, lora=True) == 2.0


def test_params_from_a_llama_config_match_the_published_size():
    # Llama-2-7B's config.json: 6.74B parameters.
    cfg = {"hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32000, "intermediate_size": 11008,
           "num_attention_heads": 32, "num_key_value_heads": 32, "tie_word_embeddings": False}
    assert params_from_config(cfg) == pytest.approx(6.74, abs=0.01)
    # Llama-3-70B (GQA, 128k vocabulary): 70.6B.
    cfg70 = {"hidden_size": 8192, "num_hidden_layers": 80, "vocab_size": 128256, "intermediate_size": 28672,
             "num_attention_heads": 64, "num_key_value_heads": 8}
    assert params_from_config(cfg70) == pytest.approx(70.6, abs=0.1)


def test_70b_dpo_on_one_node_is_refused_with_the_arithmetic():
    cfg = load_config("tiny/sft", DPO_70B)
    rep = check_resources(cfg, Request(nodes=1, gpus_per_node=8, gpu_mem_gb=80))
    assert not rep.ok
    (issue,) = [i for i in rep.issues if i.key == "cluster.trainer.num_actors"]
    text = str(issue)
    # 70B x (16/8 trained + 2/8 reference) = 70 x 2.25 = 157.5 GB per GPU against 64 usable.
    assert "70.0B params" in text and "2.00 B trained" in text and "0.25 B reference" in text
    assert "157.5 GB per GPU" in text and "usable 64.0 GB" in text
    assert "use >= 32 trainer GPUs" in issue.fix  # 70 x 18 / 32 = 39.4 GB <= 64
    # The reference's parameters in host memory (train.dpo.ref_offload): no reference term on the GPU.
    cfg = load_config("tiny/sft", [*DPO_70B, "train.dpo.ref_offload=true"])
    (issue,) = [i for i in check_resources(cfg, Request(nodes=1, gpus_per_node=8, gpu_mem_gb=80)).issues
                if i.key == "cluster.trainer.num_actors"]
    assert "B reference" not in str(issue) and "frozen models in host memory] = 140.0 GB" in str(issue)


def test_70b_dpo_on_enough_gpus_fits():
    cfg = load_config("tiny/sft", [*DPO_70B[:-2], "cluster.trainer.num_actors=32",
                                   "cluster.trainer.num_gpus_per_actor=1"])
    rep = check_resources(cfg, Request(nodes=4, gpus_per_node=8, gpu_mem_gb=80))
    assert rep.ok, rep.issues
    assert any("fits: dpo" in n and "39.4 GB per GPU" in n for n in rep.notes)


def test_actor_larger_than_a_node_and_too_many_actors_are_refused():
    cfg = load_config("tiny/sft", [*JOINED, "train.sft.global_batch_samples=20",
                                   "cluster.generator.num_gpus_per_actor=4", "cluster.trainer.num_actors=5",
                                   "cluster.trainer.num_gpus_per_actor=1"])
    rep = check_resources(cfg, Request(nodes=2, gpus_per_node=2))
    keys = {i.key: str(i) for i in rep.issues}
    assert "one generator actor needs 4 GPUs but a node has 2" in keys["cluster.generator.num_gpus_per_actor"]
    assert "5 trainer actors x 1 GPUs need 5 GPUs; 2 node(s) x 2 GPUs hold at most 4" in \
        keys["cluster.trainer.num_actors"]


def test_model_size_is_read_from_a_local_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "hidden_size": 4096, "num_hidden_layers": 32, "vocab_size": 32000, "intermediate_size": 11008,
        "num_attention_heads": 32}))
    cfg = load_config("tiny/sft", [*JOINED, f"model.strong.path={tmp_path}", "cluster.trainer.num_actors=1",
                                   "cluster.trainer.num_gpus_per_actor=1", "train.sft.zero_stage=0"])
    rep = check_resources(cfg, Request(nodes=1, gpus_per_node=1, gpu_mem_gb=80))
    # 6.74B x 16 B = 107.8 GB on one GPU.
    assert not rep.ok and "107.8 GB per GPU" in str(rep.issues[0])


def test_cpu_recipe_on_cpu_nodes_passes_with_a_note():
    cfg = load_config("tiny/sft", [*JOINED, "cluster.trainer.num_actors=2", "cluster.placement_strategy=SPREAD"])
    rep = check_resources(cfg, Request(nodes=2, gpus_per_node=0))
    assert rep.ok
    assert rep.notes  # the skipped memory check is said, not silent


def test_rlhf_with_ppo_counts_four_models():
    rlhf = [*JOINED, "train.method=rlhf", "model.strong.params_b=7", "train.rlhf.reward_model.zero_stage=3",
            "cluster.trainer.num_gpus_per_actor=1", "cluster.trainer.num_actors=8",
            "train.rlhf.reward_model.global_batch_samples=16", "train.rlhf.ppo.max_prompt_tokens=64",
            "train.rlhf.ppo.max_new_tokens=192"]
    gb, formula = training_memory_gb(load_config("tiny/sft", rlhf), 7.0, 8, "rlhf")
    assert gb == pytest.approx(7 * (2 * 16 / 8 + 2 * 2 / 8))
    assert "actor" in formula and "critic" in formula and "reward" in formula
    # The frozen two in host memory (train.rlhf.ppo.ref_reward_offload): the trained two alone on the GPUs.
    cfg = load_config("tiny/sft", [*rlhf, "train.rlhf.ppo.ref_reward_offload=true"])
    gb, formula = training_memory_gb(cfg, 7.0, 8, "rlhf")
    assert gb == pytest.approx(7 * 2 * 16 / 8) and "reward" not in formula and "frozen models in host memory" in formula


@pytest.mark.parametrize("name", sorted(STATED_LAYOUTS))
def test_every_gpu_and_aligner_recipe_fits_its_stated_layout(name):
    nodes, gpus = STATED_LAYOUTS[name]
    cfg = load_config(name, JOINED)
    rep = check_resources(cfg, Request(nodes=nodes, gpus_per_node=gpus, gpu_mem_gb=80))
    assert rep.ok, [str(i) for i in rep.issues]
    if cfg.model.strong.params_b or cfg.model.aligner.params_b:  # sized models: a memory check ran and passed
        assert any(n.startswith("fits: ") for n in rep.notes), rep.notes


def test_a_nodes_cpus_must_hold_every_actor_placed_there_not_only_one():
    """Eight trainer ranks of 8 CPUs on one 8-GPU node need 64 CPUs; colocated roles seat one actor each per GPU."""
    cfg = load_config("gpu/alpaca7b-aligner7b-dpo", [*JOINED, "cluster.colocate=[generator,corrector]",
                                                     "cluster.trainer.num_cpus_per_actor=8"])
    rep = check_resources(cfg, Request(nodes=1, gpus_per_node=8, cpus_per_node=48))
    keys = {i.key: f"{i.problem} | {i.fix}" for i in rep.issues}
    assert "8 trainer actors fill a node's 8 GPUs and need 8 x 8 = 64 CPUs, but a node has 48" in \
        keys["cluster.trainer.num_cpus_per_actor"]
    assert "lower it to at most 6" in keys["cluster.trainer.num_cpus_per_actor"]
    assert "8 shared GPUs seat one actor of each colocated role (generator 2 + corrector 2 CPUs each): 32 CPUs" \
        not in keys.get("cluster.colocate", "")  # 32 <= 48: fits
    rep = check_resources(load_config("gpu/alpaca7b-aligner7b-dpo", JOINED),
                          Request(nodes=1, gpus_per_node=8, cpus_per_node=64))
    assert [i.key for i in rep.issues] == ["cluster.colocate"]
    assert "(generator 2 + corrector 2 + trainer 6 + judge 2 CPUs each): 96 CPUs, but a node has 64" in \
        rep.issues[0].problem
    assert check_resources(load_config("gpu/alpaca7b-aligner7b-dpo", JOINED),
                           Request(nodes=1, gpus_per_node=8, cpus_per_node=96)).ok


def test_a_colocated_zero3_dpo_reference_not_offloaded_is_pointed_out():
    """Sharing its GPUs, the trainer drops a ZeRO-3 reference at every turn: the plan says so, and what keeps it."""
    def notes(*over: str) -> list[str]:
        cfg = load_config("gpu/alpaca7b-aligner7b-dpo", [*JOINED, *over])
        return [n for n in check_resources(cfg, Request(nodes=1, gpus_per_node=8, gpu_mem_gb=80)).notes
                if "train.dpo.ref_offload=true" in n]

    assert notes() == []  # the GPU recipes offload it
    [note] = notes("train.dpo.ref_offload=false")
    assert "dropped whenever another role works and loaded again each round" in note
    assert notes("train.dpo.ref_offload=false", "cluster.colocate=[]", *[
        f"cluster.{role}.num_gpus_per_actor=1" for role in ("generator", "corrector", "trainer", "judge")]) == []
