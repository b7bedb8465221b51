"""Trainer ranks: a group of actors forming one torch.distributed world running OpenRLHF's trainers.

Rank 0 picks the rendezvous address (its node's IP and a free port); every rank then exports
MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE/LOCAL_RANK and calls the same backend function, which hands them
to DeepSpeed (gloo on CPU, NCCL on GPU). On a machine without CUDA the CPU compatibility layer is applied.

:meth:`w2s.roles.trainer.TrainerService.train` is the one way w2s trains: the loop's stages, PopAlign and ``w2s aligner
train`` all go through it, so every training run gets the ``cluster.trainer`` world and
the model section's attention kernel and ``trust_remote_code``. The ranks stay for the run: the world is joined
once, and each training's models are freed when it returns.
"""

from __future__ import annotations

import os
from typing import Any

from w2s.cluster import RoleActorMixin
from w2s.ports import rendezvous_port
from w2s.workers import typed
from w2s.workers.dispatch import Dispatch, register
from w2s.workers.requests import CheckLoads, Training


class TrainerWorker(RoleActorMixin):
    def rendezvous(self) -> tuple[str, int]:
        import ray

        return ray.util.get_node_ip_address(), rendezvous_port()

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

    @register(Dispatch.ALL)
    def train(self, request: Training) -> dict[str, Any]:
        """Run one training (:mod:`w2s.workers.requests`: SFT, DPO, a reward model or the Aligner) with its config
        section re-typed here (a misspelt field is an error, and no default is restated on this side of the actor
        boundary); its result as a dict."""
        import dataclasses

        from w2s.config import schema

        section = typed(getattr(schema, request.schema), request.section)
        try:
            result = request.run(section)
        finally:
            release_memory()  # the rank stays for the next training: the models of this one go
        return dataclasses.asdict(result) if dataclasses.is_dataclass(result) else dict(result)

    @register(Dispatch.ALL)
    def check_loads(self, request: CheckLoads) -> int:
        """The rows of a training file that OpenRLHF's dataset keeps, read here as training will read them
        (:func:`w2s.backends.data.check_loads`): the driver does not import OpenRLHF for it."""
        from w2s.backends.data import check_loads

        r = request
        return check_loads(r.data, r.tokenizer, r.kind, chat=r.chat, max_len=r.max_len,
                           trust_remote_code=r.trust_remote_code)

    @register(Dispatch.ALL)
    def sleep(self, discard: bool = False) -> bool:
        """Another role takes the GPUs these ranks share: what they hold between trainings (the kept DPO reference)
        leaves them (each training's own models are already freed when it returns; ``discard`` changes nothing)."""
        from w2s.backends.reference import park_kept_reference

        return park_kept_reference()

    @register(Dispatch.ALL)
    def wake_up(self) -> None:
        """Nothing to bring back now: a parked reference returns to the GPU when the next training asks for it."""

    @register(Dispatch.ALL)
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

