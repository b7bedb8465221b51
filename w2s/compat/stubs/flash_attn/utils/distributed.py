"""``all_gather`` with flash-attn's signature, in plain torch.distributed (see the package docstring)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_gather(input_: torch.Tensor, process_group) -> torch.Tensor:
    """Gather ``input_`` from every rank of ``process_group`` and concatenate along dim 0."""
    world_size = dist.get_world_size(process_group)
    if world_size == 1:
        return input_
    parts = [torch.empty_like(input_) for _ in range(world_size)]
    dist.all_gather(parts, input_.contiguous(), group=process_group)
    return torch.cat(parts, dim=0)
