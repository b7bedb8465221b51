"""Run OpenRLHF's SFT, DPO and reward-model trainers on a machine without CUDA.

OpenRLHF 0.11 targets CUDA, but its SFT/DPO/RM code paths work on CPU with DeepSpeed's CPU accelerator once a
few hard-coded CUDA assumptions are neutralised. :func:`apply` does exactly this, and nothing when CUDA is
available:

1. **flash_attn import stub.** ``openrlhf.models.ring_attn_utils`` imports ``flash_attn.bert_padding`` and
   ``flash_attn.utils.distributed`` at module top level, so ``openrlhf.models`` (and every trainer) fails to
   import without flash-attn, which cannot even be built without CUDA. ``w2s/compat/stubs`` (a torch-only
   package with the same public names) is put on ``sys.path`` when the real package is not importable. It is
   only reached by sample packing (``packing_samples``: the padding helpers unpad a micro-batch, and transformers'
   sdpa/eager attention keeps the packed rows apart, see :mod:`w2s.backends.packing`) and ring attention (which
   needs flash-attn's kernels and stays unsupported on CPU).
2. **Environment.** ``DS_ACCELERATOR=cpu`` (DeepSpeed then uses gloo) and, only where unset, a single-process
   torch.distributed world: ``MASTER_ADDR=127.0.0.1``, a free ``MASTER_PORT``, ``RANK=0``, ``WORLD_SIZE=1`` and
   ``LOCAL_RANK=-1`` (OpenRLHF's strategy then skips ``torch.cuda.set_device``).
3. **torch.cuda calls OpenRLHF hard-codes** (``utils/deepspeed/deepspeed.py`` ``all_reduce``/``all_gather``
   move logging scalars to ``torch.cuda.current_device()``; ``torch_dist_barrier_and_cuda_sync`` calls
   ``torch.cuda.synchronize()``; checkpoint and Ray helpers call ``empty_cache``/``set_device``):
   ``current_device`` returns the CPU device and ``synchronize``, ``set_device``, ``empty_cache`` become no-ops.
4. **float32 training.** ``param_dtype: float32`` is passed on as ``fp32``, which OpenRLHF's dtype helper
   does not know: it is taught it (see :func:`allow_fp32`), for CPUs where bf16 arithmetic is slow.
5. **No C++ JIT builds.** On CPU DeepSpeed would compile its shared-memory all-reduce op and a fused CPU Adam
   with g++ on first use (about 90 s and 2 GB on a cold CI machine). ``deepspeed.comm.torch.build_shm_op`` is
   replaced by a function returning ``None`` (DeepSpeed then uses plain gloo collectives), and
   ``deepspeed.initialize`` is wrapped to add ``torch_adam: True`` to an Adam/AdamW optimizer config such as the
   one OpenRLHF's ``DeepspeedStrategy.prepare`` builds, which makes DeepSpeed use ``torch.optim.AdamW``.
   Set ``W2S_DS_JIT=1`` to keep DeepSpeed's own choice.

The patches change process-global state, so they are applied once per process (``apply`` is idempotent) and
only in processes that train on CPU.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from w2s.ports import rendezvous_port

STUBS_DIR = Path(__file__).resolve().parent / "stubs"

_patched = False


def is_patched() -> bool:
    """True once :func:`apply` has patched this process."""
    return _patched


def _set_single_process_env() -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        # A fixed port would collide with any other single-rank process on the machine.
        os.environ["MASTER_PORT"] = str(rendezvous_port("127.0.0.1"))
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "-1")


def _install_flash_attn_stub() -> None:
    if importlib.util.find_spec("flash_attn") is not None:
        return
    stubs = str(STUBS_DIR)
    if stubs not in sys.path:
        sys.path.append(stubs)  # appended: a real flash_attn installed later still wins
    importlib.invalidate_caches()


def _patch_torch_cuda() -> None:
    import torch

    def synchronize(device: Any = None) -> None:
        return None

    def set_device(device: Any) -> None:
        return None

    def empty_cache() -> None:
        return None

    # One function object per name: torch._dynamo's rule table rejects a single object under two names.
    torch.cuda.current_device = lambda: torch.device("cpu")
    torch.cuda.synchronize = synchronize
    torch.cuda.set_device = set_device
    torch.cuda.empty_cache = empty_cache


def _with_torch_adam(config: Any) -> Any:
    """A copy of a DeepSpeed config dict whose Adam/AdamW optimizer uses torch's implementation."""
    if not isinstance(config, dict):
        return config
    optimizer = config.get("optimizer")
    if not isinstance(optimizer, dict) or str(optimizer.get("type", "")).lower() not in ("adam", "adamw"):
        return config
    config = copy.deepcopy(config)
    config["optimizer"].setdefault("params", {})["torch_adam"] = True
    return config


def _avoid_deepspeed_jit() -> None:
    import importlib

    import deepspeed

    # `import deepspeed.comm.torch as m` would bind the torch package (deepspeed.comm re-exports `torch`),
    # so the module is reached through sys.modules.
    importlib.import_module("deepspeed.comm.torch")
    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None

    original = deepspeed.initialize
    if getattr(original, "_w2s_torch_adam", False):
        return

    @functools.wraps(original)
    def initialize(*args: Any, **kwargs: Any) -> Any:
        if "config" in kwargs:
            kwargs["config"] = _with_torch_adam(kwargs["config"])
        return original(*args, **kwargs)

    initialize._w2s_torch_adam = True  # type: ignore[attr-defined]
    deepspeed.initialize = initialize


def apply() -> bool:
    """Make this process able to run OpenRLHF's SFT/DPO/RM trainers without CUDA.

    Call it before importing ``openrlhf.models`` (or anything that imports it). Safe to call repeatedly.

    Returns:
        True when the CPU patches are (now or already) applied; False on a machine with CUDA, where nothing
        is changed.
    """
    global _patched
    if _patched:
        return True
    import torch

    if torch.cuda.is_available():
        return False
    _set_single_process_env()
    _install_flash_attn_stub()
    _patch_torch_cuda()
    if os.environ.get("W2S_DS_JIT", "0") != "1":
        _avoid_deepspeed_jit()
    allow_fp32()
    _patched = True
    return True


def allow_fp32() -> None:
    """OpenRLHF loads models in bf16 or fp16 only; on a CPU without native bf16/fp16 arithmetic (AVX2 without
    AVX512-BF16 or AMX) those are emulated, far slower than float32. ``param_dtype: float32`` ("fp32"
    here) loads the model in float32 and leaves DeepSpeed's bf16 and fp16 sections off, so it trains in fp32."""
    import torch
    from openrlhf.utils import utils

    if getattr(utils.convert_to_torch_dtype, "_w2s", False):
        return
    original = utils.convert_to_torch_dtype

    @functools.wraps(original)
    def convert(param_dtype: str) -> torch.dtype:
        return torch.float32 if param_dtype == "fp32" else original(param_dtype)

    convert._w2s = True  # type: ignore[attr-defined]
    utils.convert_to_torch_dtype = convert
