"""OpenRLHF's PPO driver as w2s runs it: ``python -m w2s.backends.ppo_main [--w2s.reference PATH] <OpenRLHF's
train_ppo_ray flags>``.

It runs OpenRLHF's own driver (``openrlhf.cli.train_ppo_ray``, unchanged) after three things:

1. **Every process patched.** It joins Ray before OpenRLHF's driver would, with a runtime environment whose setup
   hook runs :func:`w2s.compat.ppo.apply_in_worker` in every worker of the job (the reward model's normalisation
   everywhere; on a machine without CUDA, the CPU patches), and patches this driver the same way.
2. **The KL anchor.** OpenRLHF 0.11.2 starts PPO's reference model from the policy PPO trains
   (``--actor.model_name_or_path``) and has no flag for another. ``train.reference: initial`` anchors every round
   on the initial policy, as DPO's reference does: ``--w2s.reference PATH`` hands the reference actors ``PATH``,
   in this driver, where OpenRLHF's ``RayActorGroup`` tells each actor what it loads.
3. **float32, and on CPU the flags a CPU takes.** ``--ds.param_dtype fp32`` is accepted (OpenRLHF's parser
   offers bf16 and fp16). Without CUDA, vLLM's and DeepSpeed's sleep flags are dropped (vLLM's CPU build has no
   sleep mode, and a CPU no device memory to give back) and the weight sync uses w2s's gloo group
   (``--vllm.sync_backend gloo``: NCCL, and the CUDA IPC OpenRLHF picks for colocated NCCL, need GPUs).
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence
from typing import Any

REFERENCE_FLAG = "--w2s.reference"
OPENRLHF_PPO = "openrlhf.cli.train_ppo_ray"
SLEEP_FLAGS = ("--vllm.enable_sleep", "--ds.enable_sleep")


def split_argv(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """(the reference path, OpenRLHF's own flags) from this module's argv."""
    rest, reference = list(argv), None
    if REFERENCE_FLAG in rest:
        i = rest.index(REFERENCE_FLAG)
        if i + 1 >= len(rest):
            raise SystemExit(f"{REFERENCE_FLAG} needs a model path")
        reference = rest[i + 1]
        del rest[i:i + 2]
    return reference, rest


def cpu_argv(argv: Sequence[str]) -> list[str]:
    """OpenRLHF's flags as a machine without CUDA runs them: no sleep flags, the gloo weight sync."""
    out = [a for a in argv if a not in SLEEP_FLAGS]
    if "--vllm.sync_backend" in out[:-1]:
        i = out.index("--vllm.sync_backend")
        del out[i:i + 2]
    return [*out, "--vllm.sync_backend", "gloo"]


def anchor_reference(path: str) -> None:
    """Make OpenRLHF's reference actors load ``path`` (the other groups keep the paths OpenRLHF gives them)."""
    from openrlhf.trainer.ray.launcher import RayActorGroup, ReferenceModelActor

    real = RayActorGroup.async_init_model_from_pretrained

    def init_model_from_pretrained(self: Any, strategy: Any, pretrain: str, *args: Any, **kwargs: Any) -> Any:
        if self.ray_actor_type is ReferenceModelActor:
            pretrain = path
        return real(self, strategy, pretrain, *args, **kwargs)

    RayActorGroup.async_init_model_from_pretrained = init_model_from_pretrained


def allow_fp32_flag() -> None:
    """Let OpenRLHF's parser take ``--ds.param_dtype fp32`` (which :mod:`w2s.compat.ppo` teaches OpenRLHF's dtype
    helper, and which leaves DeepSpeed's bf16 and fp16 sections off)."""
    import argparse

    original = argparse.ArgumentParser.add_argument
    if getattr(original, "_w2s", False):
        return

    def add_argument(self: argparse.ArgumentParser, *names: Any, **kwargs: Any) -> Any:
        if "--ds.param_dtype" in names and kwargs.get("choices"):
            kwargs["choices"] = [*kwargs["choices"], "fp32"]
        return original(self, *names, **kwargs)

    add_argument._w2s = True  # type: ignore[attr-defined]
    argparse.ArgumentParser.add_argument = add_argument  # type: ignore[method-assign]


def join_ray(argv: Sequence[str], *, on_cpu: bool) -> None:
    """Join ``RAY_ADDRESS`` (or start a private instance, the actor's GPUs as logical GPUs on a CPU) with the
    runtime environment that patches every worker of the job."""
    import ray

    from w2s.compat import ppo as ppo_patches

    runtime_env = ppo_patches.ray_runtime_env(on_cpu=on_cpu)
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, runtime_env=runtime_env)
        return
    argv = list(argv)
    gpus = int(argv[argv.index("--actor.num_gpus_per_node") + 1]) if "--actor.num_gpus_per_node" in argv[:-1] else 1
    ray.init(address="local", num_gpus=gpus if on_cpu else None, runtime_env=runtime_env, include_dashboard=False)


def main(argv: Sequence[str] | None = None) -> None:
    from w2s.compat import ppo as ppo_patches

    reference, rest = split_argv(sys.argv[1:] if argv is None else argv)
    on_cpu = ppo_patches.apply_in_worker()
    if on_cpu:
        rest = cpu_argv(rest)
    allow_fp32_flag()
    join_ray(rest, on_cpu=on_cpu)
    if reference:
        anchor_reference(reference)
    sys.argv = [OPENRLHF_PPO, *rest]
    runpy.run_module(OPENRLHF_PPO, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
