"""Sample packing (``packing_samples``), checked on the model that is about to train.

OpenRLHF packs a micro-batch by removing its padding: the rows become one sequence whose position ids restart at
0 for each row, and the attention mask is dropped (``openrlhf/models/ring_attn_utils.py``,
``unpad_and_slice_tensor``). What keeps a packed row from attending to the rows before it is then the attention
kernel alone: flash-attention 2 reads the restarts as sequence boundaries, and transformers' sdpa and eager paths do
the same through their packed-sequence masks (``masking_utils.find_packed_sequence_indices``) -- for models built
on transformers' mask helpers. A model that is not (custom code, an older architecture) would silently train every
row on its neighbours' tokens; :func:`check_packing` finds that out with one short forward pass before training.
"""

from __future__ import annotations

from typing import Any

from w2s.errors import ConfigError, ConfigIssue

# Log-probabilities of a row packed and padded differ only by the order of floating-point sums; a row reading its
# neighbour's tokens differs by far more. (Tolerances per training dtype.)
TOLERANCE = {"fp32": 1e-3, "bf16": 0.15, "fp16": 0.05}
# Two rows of different lengths: the second is the one that could read the first.
_ROWS = ((5, 17, 29, 41, 53, 65, 77), (11, 23, 35, 47))


def _rows(vocab_size: int, device: Any) -> tuple[Any, Any]:
    import torch

    width = max(len(r) for r in _ROWS)
    ids = torch.zeros((len(_ROWS), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(_ROWS):
        ids[i, :len(row)] = torch.tensor([t % vocab_size for t in row])
        mask[i, :len(row)] = 1
    return ids.to(device), mask.to(device)


def _outputs(kind: str, model: Any, ids: Any, mask: Any) -> Any:
    """Per-token log-probabilities (SFT, DPO) or per-row rewards (reward model), padding left out."""
    if kind == "rm":
        return model(ids, attention_mask=mask).float()
    import torch

    logprobs = model(ids, action_mask=None, attention_mask=mask, return_logprobs=True).float()
    return torch.cat([logprobs[i, :len(row) - 1] for i, row in enumerate(_ROWS)])


def packing_difference(kind: str, model: Any, switch: Any, vocab_size: int) -> float:
    """The largest difference between ``model``'s outputs for two rows packed and the same rows padded.

    ``model`` is the prepared (DeepSpeed-wrapped) OpenRLHF Actor or reward model, ``switch`` the object holding its
    ``packing_samples`` flag (the Actor; the reward model inside its engine). Every rank calls it together (a ZeRO-3
    forward gathers each layer's shards from all ranks). Left packing, as it found it.
    """
    import torch

    ids, mask = _rows(vocab_size, next(iter(model.parameters())).device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            switch.packing_samples = False
            padded = _outputs(kind, model, ids, mask)
            switch.packing_samples = True
            packed = _outputs(kind, model, ids, mask)
    finally:
        switch.packing_samples = True
        model.train(training)
    return float((packed - padded).abs().max())


def check_packing(kind: str, model: Any, switch: Any, vocab_size: int, *, param_dtype: str,
                  attn_implementation: str) -> float:
    """:func:`packing_difference` within the dtype's tolerance, or a config error naming the fix."""
    difference = packing_difference(kind, model, switch, vocab_size)
    tolerance = TOLERANCE[param_dtype]
    if not difference <= tolerance:
        raise ConfigError([ConfigIssue(
            "packing_samples", True,
            f"this model's {attn_implementation} attention does not keep packed rows apart: its outputs for two "
            f"rows packed differ from the same rows padded by {difference:.3g} (tolerance {tolerance:g} in "
            f"{param_dtype}), so each row would train on its neighbours' tokens",
            "set packing_samples to false, or attn_implementation to flash_attention_2 (on a GPU)")])
    return difference


def verify_prepared(kind: str, args: Any, strategy: Any, model: Any) -> float:
    """:func:`check_packing` on a model ``strategy.prepare`` returned, with OpenRLHF's flags ``args``."""
    inner = strategy._unwrap_model(model)  # the transformers model (the Actor's) or the reward model
    switch = inner if kind == "rm" else model
    return check_packing(kind, model, switch, int(inner.config.vocab_size), param_dtype=str(args.ds.param_dtype),
                         attn_implementation=str(args.ds.attn_implementation))
