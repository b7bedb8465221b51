"""Trainer ranks: a group of actors forming one torch.distributed world running OpenRLHF's trainers.

Rank 0 picks the rendezvous address (its node's IP and a free port); every rank then exports
MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK and calls the same backend function, which hands them
to DeepSpeed (gloo on CPU, NCCL on GPU). On a machine without CUDA the CPU compatibility layer is applied.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

from w2s.cluster import RoleActorMixin, free_port


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

        if function == "train_aligner":
            from w2s.aligner.train import train_aligner as fn
        else:
            from w2s.backends import openrlhf

            fn = getattr(openrlhf, function)
        result = fn(OmegaConf.create(cfg), *args, **kwargs)
        return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)
