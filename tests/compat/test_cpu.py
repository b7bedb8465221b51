"""The CPU compatibility layer: flash_attn stub, torch.cuda patches, environment, idempotence, no-op with CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from w2s.compat import cpu

# slow: each test imports DeepSpeed and OpenRLHF in a fresh state (5-10 s for the first).
pytestmark = [pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU patches"), pytest.mark.slow]


def _run(code: str, env: dict[str, str] | None = None) -> dict:
    """Run code in a fresh interpreter (the patches are process-global) and return the JSON it prints last."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "DS_ACCELERATOR")}
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env=full_env, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_apply_patches_cuda_env_and_stub_then_is_idempotent():
    result = _run("""
        import json, os, sys, torch
        from w2s.compat import cpu
        before = cpu.is_patched()
        first = cpu.apply()
        sync, cur = torch.cuda.synchronize, torch.cuda.current_device
        second = cpu.apply()
        import deepspeed
        init_a = deepspeed.initialize
        third = cpu.apply()
        torch.cuda.synchronize(); torch.cuda.set_device(0); torch.cuda.empty_cache()
        import flash_attn
        from flash_attn.bert_padding import index_first_axis, pad_input, unpad_input, rearrange, repeat
        from flash_attn.utils.distributed import all_gather
        from openrlhf.models import Actor  # fails without the stub
        print(json.dumps({
            "before": before, "first": first, "second": second, "third": third, "patched": cpu.is_patched(),
            "same_patch": sync is torch.cuda.synchronize and cur is torch.cuda.current_device,
            "same_init": init_a is deepspeed.initialize,
            "device": str(torch.cuda.current_device()),
            "stub": flash_attn.__version__,
            "stub_entries": sum(p == str(cpu.STUBS_DIR) for p in sys.path),
            "env": {k: os.environ[k] for k in ("DS_ACCELERATOR", "MASTER_ADDR", "MASTER_PORT", "RANK",
                                               "WORLD_SIZE", "LOCAL_RANK")},
            "shm": sys.modules["deepspeed.comm.torch"].build_shm_op(),
        }))
    """)
    assert result["before"] is False
    assert result["first"] is result["second"] is result["third"] is True and result["patched"]
    assert result["same_patch"] and result["same_init"]  # applying again changes nothing
    assert result["device"] == "cpu"
    assert "w2s" in result["stub"] and result["stub_entries"] == 1
    env = result["env"]
    assert env["DS_ACCELERATOR"] == "cpu" and env["RANK"] == "0" and env["WORLD_SIZE"] == "1"
    assert env["LOCAL_RANK"] == "-1" and env["MASTER_ADDR"] == "127.0.0.1" and int(env["MASTER_PORT"]) > 0
    assert result["shm"] is None  # no C++ JIT build of the shared-memory op


def test_apply_keeps_a_world_given_in_the_environment():
    env = {"MASTER_ADDR": "127.0.0.2", "MASTER_PORT": "29123", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "-1",
           "W2S_DS_JIT": "1"}  # skips the DeepSpeed patch (and its slow import): only the environment matters here
    result = _run("""
        import json, os
        from w2s.compat import cpu
        cpu.apply()
        print(json.dumps({k: os.environ[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}))
    """, env)
    assert result == {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")}


def test_nothing_is_patched_when_cuda_is_available():
    result = _run("""
        import json, os, sys, torch
        torch.cuda.is_available = lambda: True  # pretend to be a GPU machine
        sync = torch.cuda.synchronize
        from w2s.compat import cpu
        applied = cpu.apply()
        print(json.dumps({"applied": applied, "patched": cpu.is_patched(), "sync_same": sync is torch.cuda.synchronize,
                          "stub_on_path": str(cpu.STUBS_DIR) in sys.path, "ds": os.environ.get("DS_ACCELERATOR"),
                          "deepspeed_imported": "deepspeed" in sys.modules}))
    """)
    assert result == {"applied": False, "patched": False, "sync_same": True, "stub_on_path": False, "ds": None,
                      "deepspeed_imported": False}


def test_torch_adam_is_added_to_adam_configs_only():
    cfg = {"optimizer": {"type": "AdamW", "params": {"lr": 1e-3}}, "zero_optimization": {"stage": 2}}
    patched = cpu._with_torch_adam(cfg)
    assert patched["optimizer"]["params"] == {"lr": 1e-3, "torch_adam": True}
    assert "torch_adam" not in cfg["optimizer"]["params"]  # the caller's dict is left alone
    muon = {"optimizer": {"type": "Muon", "params": {"lr": 0.02}}}
    assert cpu._with_torch_adam(muon) is muon
    assert cpu._with_torch_adam({"zero_optimization": {}}) == {"zero_optimization": {}}


def test_stub_padding_helpers_round_trip():
    import importlib.util

    spec = importlib.util.spec_from_file_location("stub_bert_padding", cpu.STUBS_DIR / "flash_attn" / "bert_padding.py")
    padding = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(padding)
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    flat, indices, cu_seqlens, max_len, used = padding.unpad_input(hidden, mask)
    assert flat.shape == (5, 3)
    assert cu_seqlens.tolist() == [0, 3, 5] and cu_seqlens.dtype == torch.int32
    assert max_len == 3 and used.tolist() == [3, 2]
    restored = padding.pad_input(flat, indices, 2, 4)
    assert torch.equal(restored, hidden * mask.unsqueeze(-1))
    rows = hidden.reshape(8, 3)
    assert torch.equal(padding.index_first_axis(rows, torch.tensor([0, 5])), rows[[0, 5]])
