"""Padding helpers with flash-attn's public signatures, in plain torch (see the package docstring)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat

__all__ = ["index_first_axis", "pad_input", "unpad_input", "rearrange", "repeat"]


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (along dim 0) at ``indices``."""
    return x[indices]


def unpad_input(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, unused_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Drop padded positions of a ``(batch, seqlen, ...)`` tensor.

    Args:
        hidden_states: ``(batch, seqlen, ...)``.
        attention_mask: ``(batch, seqlen)``, 1 for tokens that are used.
        unused_mask: ``(batch, seqlen)``, 1 for tokens that are kept but not attended (counted as present).

    Returns:
        ``(hidden_states[used], indices, cu_seqlens, max_seqlen_in_batch, seqused)`` where ``indices`` index the
        flattened ``batch * seqlen`` positions, ``cu_seqlens`` is the int32 prefix sum of per-row lengths with a
        leading 0, and ``seqused`` the per-row count of attended tokens.
    """
    all_masks = attention_mask + unused_mask if unused_mask is not None else attention_mask
    seqlens_in_batch = all_masks.sum(dim=-1, dtype=torch.int32)
    used_seqlens_in_batch = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()
    max_seqlen_in_batch = int(seqlens_in_batch.max().item()) if seqlens_in_batch.numel() else 0
    cu_seqlens = F.pad(torch.cumsum(seqlens_in_batch, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return index_first_axis(flat, indices), indices, cu_seqlens, max_seqlen_in_batch, used_seqlens_in_batch


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of :func:`unpad_input`: scatter ``(total, ...)`` rows back into a zero ``(batch, seqlen, ...)``."""
    out = torch.zeros(batch * seqlen, *hidden_states.shape[1:], dtype=hidden_states.dtype,
                      device=hidden_states.device)
    out[indices] = hidden_states
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])
