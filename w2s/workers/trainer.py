"""Trainer ranks: a group of actors forming one torch.distributed world running OpenRLHF's trainers.

Rank 0 picks the rendezvous address (its node's IP and a free port); every rank then exports
MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK and calls the same backend function, which hands them
to DeepSpeed (gloo on CPU, NCCL on GPU). On a machine without CUDA the CPU compatibility layer is applied.

:meth:`w2s.roles.Services.train` is the one way w2s trains: the loop's stages, PopAlign and ``w2s aligner
train`` all go through it, so every training run gets the ``cluster.trainer`` world and
the model section's attention kernel and ``trust_remote_code``. The ranks stay for the run: the world is joined
once, and each training's models are freed when it returns.
"""

from __future__ import annotations

import os
from typing import Any

from w2s.cluster import RoleActorMixin, free_port
from w2s.workers import typed

# The schema type of the config section each training function is handed (re-typed here: a misspelt field is an
# error, and no default is restated on this side of the actor boundary).
SECTION_TYPES = {"train_sft": "SFTConfig", "train_dpo": "DPOConfig", "train_reward_model": "RewardModelConfig",
                 "train_aligner": "W2SConfig"}

# Backend functions that train the strong policy (or a reward model from it): they load model.strong's kind of
# model, so they get its attention kernel and remote-code flag. train_aligner reads model.aligner itself.
POLICY_FUNCTIONS = ("train_sft", "train_dpo", "train_reward_model")


class TrainerWorker(RoleActorMixin):
    def rendezvous(self) -> tuple[str, int]:
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def join(self, master_addr: str, master_port: int, rank: int, world_size: int) -> None:
        import ray

        gpu_ids = ray.get_gpu_ids()
        os.environ.update({"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "RANK": str(rank),
                           "WORLD_SIZE": str(world_size),
                           # Ray sets CUDA_VISIBLE_DEVICES per actor, so each rank sees its GPU as device 0; -1 tells
                           # OpenRLHF a lone CPU rank is not distributed at all.
                           "LOCAL_RANK": "-1" if not gpu_ids and world_size == 1 else "0"})
        from w2s.compat.cpu import apply

        apply()

    def run(self, function: str, cfg: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Call a training function (``train_sft``, ``train_dpo``, ``train_reward_model`` of the OpenRLHF backend,
        or ``train_aligner``) with the given config section; returns its result as a dict."""
        import dataclasses

        from w2s.config import schema

        if function == "train_aligner":
            from w2s.aligner.train import train_aligner as fn
        else:
            from w2s.backends import openrlhf

            fn = getattr(openrlhf, function)
        try:
            result = fn(typed(getattr(schema, SECTION_TYPES[function]), cfg), *args, **kwargs)
        finally:
            release_memory()  # the rank stays for the next training: the models of this one go
        return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)

    def check_loads(self, data_path: str, tokenizer_path: str, kind: str, **kwargs: Any) -> int:
        """The rows of a training file that OpenRLHF's dataset keeps, read here as training will read them
        (:func:`w2s.backends.data.check_loads`): the driver does not import OpenRLHF for it."""
        from w2s.backends.data import check_loads

        return check_loads(data_path, tokenizer_path, kind, **kwargs)

    def sleep(self) -> bool:
        """Another role takes the GPUs these ranks share: what they hold between trainings (the kept DPO reference)
        leaves them (each training's own models are already freed when it returns)."""
        from w2s.backends.reference import park_kept_reference

        return park_kept_reference()

    def wake_up(self) -> None:
        """Nothing to bring back now: a parked reference returns to the GPU when the next training asks for it."""

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def model_kwargs(cfg: Any, function: str) -> dict[str, Any]:
    """The model-section arguments a training function needs: for the policy trainers, ``model.strong``'s
    attention kernel and ``trust_remote_code`` (the backend falls back to sdpa without CUDA)."""
    if function not in POLICY_FUNCTIONS:
        return {}
    model = cfg.model.strong
    return {"attn_implementation": str(model.attn_implementation),
            "trust_remote_code": bool(model.trust_remote_code)}
