"""`w2s plan`: every GPU and Aligner recipe placed for real on a logical Ray cluster of its stated layout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.launch.test_resources import STATED_LAYOUTS as RECIPES
from w2s.cli import main
from w2s.config.compose import load_config
from w2s.launch.plan import job_roles, logical_cluster, make_plan

CPUS = 96  # per node: what an 8-GPU node has at least; the recipes' CPU requests are checked against it
JOINED = ["cluster.address=auto"]  # as `w2s plan` and `w2s launch` load recipes


def _by_layout(nodes: int) -> list[str]:
    return [name for name, (n, _) in RECIPES.items() if n == nodes]


def _check_fits(name: str, ids: list[str]) -> None:
    nodes, gpus = RECIPES[name]
    cfg = load_config(name, JOINED)
    plan = make_plan(cfg, nodes=nodes, gpus_per_node=gpus, cpus_per_node=CPUS, recipe=name, node_ids=ids)
    assert plan.ok, plan.render()
    assert {r.role for r in plan.roles} >= set(job_roles(cfg))
    for r in plan.roles:  # every actor placed, each TP engine's GPUs on one node
        assert len(r.actor_nodes) == len(r.layout.slots) > 0
        assert sum(r.per_node().values()) == len(r.layout.slots)
        for nodes_of_actor in r.actor_nodes:
            assert len(nodes_of_actor) == max(r.layout.tensor_parallel, 1)
            if r.layout.tensor_parallel:
                assert len(set(nodes_of_actor)) == 1


@pytest.mark.slow
class TestOneNode:
    """The one-node recipes, and refusals, on one logical 8-GPU node shared by the tests of this class."""

    @pytest.fixture(scope="class")
    def node(self):
        with logical_cluster(1, 8, CPUS) as ids:
            yield ids

    def test_one_node_recipes_fit(self, node):
        names = _by_layout(1)
        assert {"gpu/alpaca7b-aligner7b-dpo", "gpu/popalign-yi", "aligner/aligner-7b"} <= set(names)
        for name in names:
            _check_fits(name, node)
        # PopAlign's 34B generator: four TP-2 engines, each on two consecutive shared GPUs of the node.
        plan = make_plan(load_config("gpu/popalign-yi", JOINED), nodes=1, gpus_per_node=8, cpus_per_node=CPUS,
                         node_ids=node)
        gen = plan.role("generator")
        assert [list(s.bundles) for s in gen.layout.slots] == [[0, 1], [2, 3], [4, 5], [6, 7]]
        # Alike bundles, a seat for every colocated role (started by this job or not): 2 + 2 + 6 + 2 CPUs.
        assert plan.pool.bundles == ({"GPU": 1.0, "CPU": 12.0},) * 8
        assert gen.actor_nodes == [["node1", "node1"]] * 4

    def test_colocated_roles_share_every_gpu_rank_by_rank(self, node):
        """The 1 x 8 layout: one rank of each role on every GPU, shown per GPU, the pool's CPUs exactly the node's."""
        plan = make_plan(load_config("gpu/alpaca7b-aligner7b-dpo", JOINED), nodes=1, gpus_per_node=8,
                         cpus_per_node=CPUS, node_ids=node)
        assert plan.ok, plan.render()
        assert plan.pool.roles == ("generator", "corrector", "trainer", "judge")
        assert plan.pool_nodes == ["node1"] * 8
        for role in ("generator", "corrector", "trainer"):
            assert [list(s.bundles) for s in plan.role(role).layout.slots] == [[i] for i in range(8)]
        text = plan.render()
        assert "shared GPUs (cluster.colocate): 8, each role's actor taking 0.25 of a GPU" in text
        # Per actor, the share it takes (as its role's total counts it), not the GPU it sits on.
        assert re.search(r"^generator\s+generate, eval\s+8\s+0.25 GPU, 2 CPU\s+1 shared GPU\(s\).*2 GPU, 16 CPU", text,
                         re.M), text
        assert re.search(r"^GPU\s+NODE\s+GENERATOR\s+CORRECTOR\s+TRAINER\s+JUDGE\s+CPUS$", text, re.M), text
        for i in range(8):
            judge = "rank 0" if i == 0 else "-"
            assert re.search(rf"^{i}\s+node1\s+rank {i}\s+rank {i}\s+rank {i}\s+{judge}\s+12$", text, re.M), text
        # The README shows this plan: every line it quotes is the command's own.
        readme = (Path(__file__).parents[2] / "README.md").read_text()
        quoted = readme.split("--cpus-per-node 96`:\n\n```\n", 1)[1].split("```", 1)[0].splitlines()
        assert len(quoted) > 5 and all(line in text.splitlines() for line in quoted if line not in ("", "..."))

    def test_too_small_a_cluster_is_refused_with_the_arithmetic(self, node):
        plan = make_plan(load_config("gpu/alpaca2-70b-aligner13b-sft", JOINED), nodes=1, gpus_per_node=8,
                         cpus_per_node=CPUS, node_ids=node)
        assert not plan.ok
        gen, trainer, judge = plan.role("generator"), plan.role("trainer"), plan.role("judge")
        assert ("4 actor(s) x 8 one-GPU bundles on one node (tensor parallel) need 32 GPUs and 64 CPUs; the "
                "cluster's 1 node(s) have 8 GPUs and 96 CPUs") in gen.problem
        assert "lower cluster.generator.num_actors to 1" in gen.problem
        # 32 ranks x (1 GPU + 8 CPUs): 8 GPUs hold 8 ranks, 96 CPUs 12.
        assert "need 32 GPUs and 256 CPUs" in trainer.problem
        assert "lower cluster.trainer.num_actors to 8" in trainer.problem
        assert "32 GPUs needed, 8 there; 256 CPUs needed, 96 there" in trainer.problem
        assert judge.fits and judge.actor_nodes == [["node1"]] * 4
        text = plan.render()
        assert "does not fit:" in text and "peak: 32 of 8 GPUs" in text

    def test_an_engine_larger_than_a_node_is_refused(self, node):
        cfg = load_config("gpu/alpaca2-70b-aligner13b-sft", [
            *JOINED, "cluster.generator.num_actors=1", "cluster.generator.num_gpus_per_actor=16",
            "generate.tensor_parallel_size=16", "eval.generate.tensor_parallel_size=16"])
        gen = make_plan(cfg, nodes=1, gpus_per_node=8, cpus_per_node=CPUS, node_ids=node).role("generator")
        assert "a node has at most 8 GPUs: lower cluster.generator.num_gpus_per_actor" in gen.problem
        assert "placement_strategy" not in gen.problem  # the strategy is not what is wrong


@pytest.mark.slow
def test_colocated_roles_on_a_node_without_their_cpus_are_refused_naming_the_keys():
    with logical_cluster(1, 8, 64) as ids:
        plan = make_plan(load_config("gpu/alpaca7b-aligner7b-dpo", JOINED), nodes=1, gpus_per_node=8,
                         cpus_per_node=64, node_ids=ids)
    assert not plan.ok
    assert ("8 GPU(s), each with the CPUs of every colocated role's actor (generator 2 + corrector 2 + trainer 6 "
            "+ judge 2 = 12)") in plan.pool_problem
    assert ("a node of 8 GPUs needs 8 x 12 = 96 CPUs for the seats but has 64: lower num_cpus_per_actor of "
            "cluster.generator, cluster.corrector, cluster.trainer, cluster.judge") in plan.pool_problem
    assert "does not fit:\n  - colocated roles: cannot place the GPUs shared by cluster.colocate" in plan.render()

@pytest.mark.slow
@pytest.mark.parametrize("nodes", [2, 4])
def test_multi_node_recipes_fit_their_stated_layout(nodes):
    names = _by_layout(nodes)
    assert names, f"no recipe states {nodes} nodes"
    with logical_cluster(nodes, 8, CPUS) as ids:
        assert len(ids) == nodes
        for name in names:
            _check_fits(name, ids)
        if nodes == 4:  # the 70B policy: four TP-8 engines, each 8 one-GPU bundles on a node of its own
            plan = make_plan(load_config("gpu/alpaca2-70b-aligner13b-sft", JOINED), nodes=4, gpus_per_node=8,
                             cpus_per_node=CPUS, node_ids=ids)
            gen = plan.role("generator")
            assert [len(b) for b, _ in gen.layout.groups] == [8] * 4
            assert all(all(x.get("GPU") == 1.0 for x in b) and s == "STRICT_PACK" for b, s in gen.layout.groups)
            assert sorted(n[0] for n in gen.actor_nodes) == ["node1", "node2", "node3", "node4"]
            assert all(set(n) == {n[0]} for n in gen.actor_nodes)
            assert plan.role("trainer").per_node() == {f"node{i}": 8 for i in range(1, 5)}
        if nodes == 2:  # the 13B policy: TP-2 engines on GPUs 2i, 2i+1 of one node, beside every other role's ranks
            plan = make_plan(load_config("gpu/alpaca2-13b-aligner7b-dpo", JOINED), nodes=2, gpus_per_node=8,
                             cpus_per_node=CPUS, node_ids=ids)
            assert plan.pool_nodes == ["node1"] * 8 + ["node2"] * 8 or plan.pool_nodes == ["node2"] * 8 + ["node1"] * 8
            gen = plan.role("generator")
            assert [list(s.bundles) for s in gen.layout.slots] == [[2 * i, 2 * i + 1] for i in range(8)]
            assert re.search(r"^1\s+node\d\s+rank 0 \(tp 1\)\s+rank 1\s+rank 1\s+rank 1\s+12$", plan.render(),
                             re.M), plan.render()


@pytest.mark.slow
def test_plan_command_exits_non_zero_when_a_role_does_not_fit(capsys):
    rc = main(["plan", "gpu/alpaca7b-aligner7b-sft", "cluster.generator.num_actors=9", "cluster.colocate=[]",
               "--nodes", "1", "--gpus-per-node", "8", "--cpus-per-node", "96"])
    out = capsys.readouterr().out
    assert rc == 1
    assert re.search(r"^generator\s+generate, eval\s+9\s.*NO$", out, re.M), out
    assert re.search(r"^trainer\s+train \(sft\)\s+8\s.*node1:8\s+yes$", out, re.M), out
    assert "9 actor(s) x 1 GPU(s) + 2 CPU(s) need 9 GPUs and 18 CPUs" in out
    assert "lower cluster.generator.num_actors to 8" in out
