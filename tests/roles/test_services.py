"""The role services: models stay loaded across calls, new weights are taken in place, roles give way when the
cluster cannot hold them all."""

from __future__ import annotations

import pytest
import ray

from w2s.cluster import RoleActorMixin
from w2s.config.compose import load_config
from w2s.generation.weights import architecture_change
from w2s.roles import Services

PROMPTS = ["How do I boil an egg?", "Name a colour.", "What is two plus two?"]
GREEDY = {"preset": "greedy", "max_new_tokens": 8}


@pytest.fixture
def local_ray():
    ray.init(address="local", num_cpus=4, include_dashboard=False)
    yield
    ray.shutdown()


def _perturbed(src: str, out) -> str:
    """A checkpoint of ``src``'s architecture with other weights, and the refit probe the trainer writes with it
    (what a train stage writes)."""
    from tests.generation.test_refit import perturbed_checkpoint

    return perturbed_checkpoint(src, out, seed=1)


def _texts(services: Services, path: str, cfg) -> list[str]:
    sampling = {**cfg.generate, **GREEDY}
    return [o.text for o in services.generator.generate(path, PROMPTS, sampling, 0, what="test")[0]]


@pytest.mark.slow  # Ray and generator actors
def test_generator_takes_new_weights_in_place_and_answers_as_a_fresh_engine(tmp_path, local_ray, tiny_strong,
                                                                             tiny_weak):
    cfg = load_config("tiny/dpo")
    trained = _perturbed(tiny_strong, tmp_path / "trained")
    assert architecture_change(tiny_strong, trained) == ""
    with Services(cfg) as services:
        before = _texts(services, tiny_strong, cfg)
        pid = services.pids()["generator"]
        after = _texts(services, trained, cfg)
        # The same process answered with the new weights: nothing was started again.
        assert services.pids()["generator"] == pid and services.starts["generator"] == 1
        assert after != before
        # Another architecture cannot be taken in place: a fresh engine, in a new process.
        assert "other tensors" in architecture_change(tiny_strong, tiny_weak)
        _texts(services, tiny_weak, cfg)
        assert services.starts["generator"] == 2 and services.pids()["generator"] != pid
    with Services(cfg) as fresh:  # a fresh engine loaded from the new checkpoint answers the same
        assert _texts(fresh, trained, cfg) == after
    assert not ray.util.placement_group_table() or all(
        pg["state"] == "REMOVED" for pg in ray.util.placement_group_table().values())


@pytest.fixture
def one_logical_gpu():
    ray.init(address="local", num_cpus=4, num_gpus=1, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.mark.slow  # a vLLM engine (its CPU build) in a generator actor
@pytest.mark.vllm
def test_vllm_engine_takes_new_weights_in_place_sleeps_while_a_role_sharing_its_gpu_works_and_closes(
        tmp_path, one_logical_gpu, tiny_strong):
    """Generator and corrector share one (logical) GPU (cluster.colocate): they stay placed and take turns, the
    engine sleeping (vLLM's sleep: on CPU the scheduler pauses, so an engine left asleep would never answer)."""
    import psutil

    vllm = ["generate.backend=vllm", "generate.enforce_eager=true", "generate.kv_cache_gib=0.25"]
    shared = ["cluster.num_gpus=1", "cluster.colocate=[generator,corrector]"] + [
        f"cluster.{r}.num_gpus_per_actor=1" for r in ("generator", "corrector")]
    cfg = load_config("tiny/dpo", vllm + shared)
    trained = _perturbed(tiny_strong, tmp_path / "trained")
    with Services(cfg) as services:
        before = _texts(services, tiny_strong, cfg)
        [pid] = services.pids()["generator"]
        engine = {p.pid for p in psutil.Process(pid).children(recursive=True)}
        assert engine  # vLLM's engine core runs in a process of its own, under the actor
        services.corrector.correct(cfg.model.aligner.path, [("q", "a")], what="test")
        assert services.turns == [("generator", "sleep")]
        after = _texts(services, trained, cfg)  # every worker reloads the checkpoint (vLLM's reload_weights)
        assert services.turns[1:] == [("corrector", "sleep"), ("generator", "wake_up")]
        assert services.pids()["generator"] == [pid] and services.starts["generator"] == 1
        assert services.loads == {f"generator:{tiny_strong}": 1, f"generator:{trained}": 1,
                                  f"corrector:{cfg.model.aligner.path}": 1}
        # vLLM's prompt log-probabilities of the probe after the reload are the trainer's (transformers, float32).
        [refit] = services.refits
        assert refit["checked"] and refit["mean_abs_diff"] < 1e-3, refit
        assert after != before
        assert _texts(services, trained, cfg) == after  # awake and not turned again: no other role worked
        assert len(services.turns) == 3
        # Its next weights announced as new ones, it sleeps at level 2 (keeping none), and the new weights wake it:
        # the memory back, the checkpoint read into it, the KV cache last (on CPU vLLM's sleep only pauses, so what
        # is checked here is the calls' order and the answers; the memory freed is the gpu-marked test's).
        services.generator.replaced_next()
        services.corrector.correct(cfg.model.aligner.path, [("q", "a")], what="test")
        assert services.turns[3:] == [("generator", "discard"), ("corrector", "wake_up")]
        assert _texts(services, tiny_strong, cfg) == before  # the first weights again, taken in place
        assert services.turns[5:] == [("corrector", "sleep"), ("generator", "wake_up")]
        # A hint only: woken for the model it held, a generator that kept no weights reads them again.
        services.generator.replaced_next()
        services.corrector.correct(cfg.model.aligner.path, [("q", "a")], what="test")
        assert _texts(services, tiny_strong, cfg) == before
        assert services.turns[7:] == [("generator", "discard"), ("corrector", "wake_up"), ("corrector", "sleep"),
                                      ("generator", "wake_up")]
        assert services.pids()["generator"] == [pid] and services.starts["generator"] == 1
    # Closed: the actor and its engine's processes are gone (a zombie not yet reaped counts as gone).
    alive = [p for p in {pid, *engine} if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert alive == []
    # A fresh engine loaded from the new checkpoint answers as the reloaded one did.
    with Services(cfg) as fresh:
        assert _texts(fresh, trained, cfg) == after


@pytest.mark.slow  # Ray and three roles' actors
def test_roles_that_do_not_fit_side_by_side_take_turns(local_ray, tiny_strong):
    """Three roles of two CPUs on four: the least recently used gives way, and comes back when asked again."""
    cfg = load_config("tiny/dpo", [f"cluster.{r}.num_cpus_per_actor=2" for r in ("generator", "corrector", "judge")])
    judge = {"kind": "embedding", "model": ""}
    with Services(cfg) as services:
        _texts(services, tiny_strong, cfg)
        services.corrector.correct(cfg.model.aligner.path, [("q", "a")], what="test")
        assert set(services.pids()) == {"generator", "corrector"}
        with services.judges.open("similarity", judge) as g:
            assert len(g.score([("q", "a", "a")], what="test")) == 1
        assert set(services.pids()) == {"corrector", "judge"}  # the generator was the least recently used
        _texts(services, tiny_strong, cfg)
        assert set(services.pids()) == {"generator", "judge"} and services.starts["generator"] == 2


def test_a_misspelt_field_crossing_into_a_worker_is_an_error():
    from omegaconf.errors import ConfigKeyError

    from w2s.config.schema import SamplingConfig
    from w2s.workers import typed

    assert typed(SamplingConfig, {"max_new_tokens": 3}).max_new_tokens == 3
    with pytest.raises(ConfigKeyError, match="max_new_token"):
        typed(SamplingConfig, {"max_new_token": 3})


def test_a_role_fits_as_its_strategy_places_it():
    """SPREAD wants a node per bundle while there are nodes (so a role holding one gives way), STRICT_PACK one
    node for the group, PACK any room anywhere."""
    from w2s.placement import fits_on_nodes

    two = ({"CPU": 1.0}, {"CPU": 1.0})
    assert not fits_on_nodes([(two, "SPREAD")], [{"CPU": 1.0}, {"CPU": 0.0}])
    assert fits_on_nodes([(two, "SPREAD")], [{"CPU": 1.0}, {"CPU": 1.0}])
    assert fits_on_nodes([(two, "SPREAD")], [{"CPU": 2.0}])  # one node: Ray's SPREAD packs it there
    assert not fits_on_nodes([(two, "STRICT_PACK")], [{"CPU": 1.0}, {"CPU": 1.0}])
    assert fits_on_nodes([(two, "PACK")], [{"CPU": 1.0}, {"CPU": 1.0}])
    assert not fits_on_nodes([(({"CPU": 1.0, "GPU": 1.0},), "PACK")], [{"CPU": 4.0}])
    # Groups share the room: the second group sees what the first took.
    assert not fits_on_nodes([(({"CPU": 1.0},), "PACK"), (({"CPU": 1.0},), "PACK")], [{"CPU": 1.0}])


@pytest.mark.gpu  # vLLM's sleep mode needs its CUDA memory pool; logical GPUs cannot show memory coming back
@pytest.mark.slow
def test_colocated_roles_on_one_gpu_give_its_memory_back_in_turn(tiny_strong):
    """gpu/smoke's layout (generator, corrector and trainer colocated on the one GPU): when the corrector takes its
    turn the generator's engine sleeps, and the free GPU memory rises by most of what that engine held."""
    import torch

    ray.init(address="local", num_gpus=1, include_dashboard=False)
    try:
        cfg = load_config("gpu/smoke", ["cluster.address="])
        with Services(cfg) as services:
            free_before = torch.cuda.mem_get_info()[0]
            _texts(services, tiny_strong, cfg)
            held = free_before - torch.cuda.mem_get_info()[0]
            assert held > 0.1 * torch.cuda.mem_get_info()[1]  # the weights and a KV cache of 0.2 of the GPU
            generator = next(h for h in services.held.values() if h.role == "generator")
            assert generator.group.call(RoleActorMixin.sleep) == [True]  # what the corrector's turn does first
            generator.asleep = True
            services.turns.append(("generator", "sleep"))
            freed = torch.cuda.mem_get_info()[0] - (free_before - held)
            assert freed > 0.7 * held, (freed, held)
            services.corrector.correct(cfg.model.aligner.path, [("q", "a")], what="test")  # starts beside the sleeper
            assert _texts(services, tiny_strong, cfg)  # the generator's turn again: awake, checked, answering
            assert services.turns[-1] == ("generator", "wake_up") and services.starts["generator"] == 1
    finally:
        ray.shutdown()


@pytest.mark.slow  # Ray and probe actors
def test_a_role_outside_the_shared_gpus_that_finds_none_left_is_told_to_join_them(one_logical_gpu):
    """The colocated roles hold the one GPU for the run: a judge asking for a GPU of its own gets the placement
    arithmetic and the fix (colocate it), and no colocated group is stopped for it."""
    from tests.test_cluster import Probe
    from w2s.errors import ClusterError

    cfg = load_config("tiny/dpo", ["cluster.num_gpus=1", "cluster.colocate=[generator]", "cluster.rpc_timeout_s=2",
                                   "cluster.generator.num_gpus_per_actor=1", "cluster.judge.num_gpus_per_actor=1"])
    with Services(cfg) as services:
        services.start("generator", "g", Probe)
        with pytest.raises(ClusterError) as e:
            services.start("judge", "j", Probe)
        assert "cannot place the judge role" in str(e.value)
        assert "The colocated roles hold 1 GPU(s) for the whole run (cluster.colocate): add judge to " \
               "cluster.colocate" in str(e.value)
        assert list(services.held) == ["g"] and services.starts == {"generator": 1}
