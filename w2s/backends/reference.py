"""What a trainer rank keeps between trainings: the DPO reference, loaded and prepared by DeepSpeed, reused by the
next round's training when it is the same model (:class:`KeptReference`), and given up while another role uses the
GPU (:func:`park_kept_reference`)."""

from __future__ import annotations

import gc
import json
import logging
from typing import Any, NamedTuple

from w2s.backends import checkpoint

log = logging.getLogger(__name__)


def release(*objects: Any) -> None:
    """Tear down DeepSpeed engines so the next call in this process starts clean (the process group stays)."""
    for obj in objects:
        # An OpenRLHF Actor holds its engine in .model; a reward model is the engine itself. Ask for destroy first:
        # a DeepSpeed engine forwards unknown attributes to its module, so its .model is the inner transformer.
        engine = obj if callable(getattr(obj, "destroy", None)) else getattr(obj, "model", obj)
        destroy = getattr(engine, "destroy", None)
        if callable(destroy):
            try:
                destroy()
            except Exception as exc:  # noqa: BLE001 - teardown must not hide the training result
                log.debug("DeepSpeed engine destroy failed: %s", exc)
    gc.collect()


class ReferenceKey(NamedTuple):
    """What makes a kept reference the one a training would load."""

    path: str
    files: str  # the model files' names, sizes and times (checkpoint.model_files), as JSON
    param_dtype: str
    attn_implementation: str
    zero_stage: int
    world: int
    offload: bool  # its ZeRO-3 shards in host memory (train.dpo.ref_offload)


class KeptReference:
    """The DPO reference of this process's last training, kept loaded (and prepared by DeepSpeed) for the next.

    The trainer ranks live for the run and the reference is the initial policy in every round by default
    (``train.reference: initial``), so each round after the first reuses it instead of loading it again (minutes
    for a 70B model). It is kept only for the same model files, training dtype, kernel, ZeRO stage and world;
    another reference replaces it.
    """

    def __init__(self) -> None:
        self.key: ReferenceKey | None = None
        self.ref: Any = None
        self.parked = False  # its weights are in host memory (another role used the GPU)

    @staticmethod
    def _key(ref_path: str, args: Any, world: int) -> ReferenceKey:
        return ReferenceKey(ref_path, json.dumps(checkpoint.model_files(ref_path)), str(args.ds.param_dtype),
                            str(args.ds.attn_implementation), int(args.ds.zero_stage), world, bool(args.ref.offload))

    def get(self, ref_path: str, args: Any, world: int) -> tuple[Any, bool]:
        """(the kept reference, True) when it is ``ref_path``'s as this training loads it, else (None, False)."""
        if self.ref is not None and self.key == self._key(ref_path, args, world):
            if self.parked:
                import torch

                self.ref.model.to(torch.cuda.current_device())
                self.parked = False
            return self.ref, True
        self.drop()
        return None, False

    def keep(self, ref_path: str, args: Any, world: int, ref: Any) -> None:
        self.key, self.ref, self.parked = self._key(ref_path, args, world), ref, False

    def park(self) -> bool:
        """Free the GPU for another role sharing it, as OpenRLHF's hybrid engine offloads between phases: a whole
        (ZeRO-0) reference goes to host memory and comes back on the next :meth:`get`; a ZeRO-3 one offloaded
        (``train.dpo.ref_offload``) already lives there and gives back the layers it still holds; any other ZeRO-3
        one, partitioned by DeepSpeed, is dropped. Whether GPU memory was freed (False on CPU)."""
        import torch

        if self.ref is None or self.parked:
            return False
        if self.key.offload:  # (on CPU too: nothing to free there, but the same call)
            self.ref.model.empty_partition_cache()  # DeepSpeed's: the gathered layers it keeps for reuse
            return torch.cuda.is_available()
        if not torch.cuda.is_available():
            return False
        if self.key.zero_stage == 3:
            self.drop()
        else:
            self.ref.model.to("cpu")
            self.parked = True
        torch.cuda.empty_cache()
        return True

    def drop(self) -> None:
        if self.ref is not None:
            release(self.ref)
        self.key = self.ref = None
        self.parked = False


KEPT_REFERENCE = KeptReference()


def park_kept_reference() -> bool:
    """Free the GPU memory this trainer rank holds between trainings (its kept DPO reference) for a role sharing
    the GPU; whether any was freed."""
    return KEPT_REFERENCE.park()
