"""Resumable training state: OpenRLHF's own DeepSpeed checkpoints, kept beside a training's output.

With ``checkpoint_every: N`` a training saves OpenRLHF's DeepSpeed checkpoint (weights, optimizer and scheduler
state, and the data position as ``consumed_samples``) every N optimizer steps in ``OUTPUT.ckpt``. Started again
with the same inputs (a requeued Slurm job, a run resumed after a kill), it loads the last one and goes on from
that step over the same data order, instead of step 0.

A checkpoint is taken only when it is this training's own: a record of what the training is (model and reference
files, the data's contents, every trainer setting, seed and world size) is written beside it before the first
step and compared on resume. Anything else found there (another training's state, a save cut short before its
first ``latest``) is removed, saying why, and the training starts from step 0. The folder goes once the trained
model is saved.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from w2s.data.files import HashCache, atomic_write_json

log = logging.getLogger(__name__)

RECORD = "w2s-training.json"


def model_files(path: str | None) -> Any:
    """A model directory as names, sizes and modification times (a rewritten model differs; hashing a 70B model
    on every start would not pay); a hub name as itself."""
    if not path or not os.path.isdir(path):
        return path
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(path).iterdir() if p.is_file())


def training_record(kind: str, settings: dict[str, Any], *, model_path: str, ref_path: str | None = None,
                    data_paths: tuple[str | None, ...] = (), world_size: int = 1) -> dict[str, Any]:
    """What identifies one training, as JSON values: a checkpoint written under another record is not resumed."""
    record = {"kind": kind, "world_size": world_size, "model": model_path, "model_files": model_files(model_path),
              "reference": ref_path, "reference_files": model_files(ref_path),
              "data_sha256": [HashCache(None).sha256(Path(p)) if p else None for p in data_paths],
              "settings": {k: v for k, v in settings.items() if not k.startswith(("logger.", "ckpt."))}}
    return json.loads(json.dumps(record, default=str))


def latest_tag(ckpt_dir: str) -> str | None:
    """The tag of the last complete DeepSpeed checkpoint in ``ckpt_dir`` (its ``latest`` file), None without one."""
    latest = os.path.join(ckpt_dir, "latest")
    if not os.path.isfile(latest):
        return None
    tag = Path(latest).read_text().strip()
    return tag if tag and os.path.isdir(os.path.join(ckpt_dir, tag)) else None


def is_own(ckpt_dir: str, record: dict[str, Any], *, state_dir: str | None = None) -> bool:
    """Whether ``ckpt_dir`` holds a complete checkpoint (in ``state_dir``, default ``ckpt_dir`` itself) written
    by the training ``record`` describes."""
    try:
        recorded = json.loads(Path(ckpt_dir, RECORD).read_text())
    except (OSError, ValueError):
        return False
    return recorded == record and latest_tag(state_dir or ckpt_dir) is not None


def claim(ckpt_dir: str, record: dict[str, Any], *, state_dir: str | None = None) -> bool:
    """Make ``ckpt_dir`` this training's: True when it already holds its checkpoint (resume from it); else
    :func:`reset` and False (start from step 0)."""
    if is_own(ckpt_dir, record, state_dir=state_dir):
        return True
    reset(ckpt_dir, record)
    return False


def reset(ckpt_dir: str, record: dict[str, Any]) -> None:
    """Remove whatever ``ckpt_dir`` holds and record the training about to write its checkpoints there."""
    if os.path.exists(ckpt_dir):
        log.warning("%s holds no checkpoint of this training (another training's, or none complete): removed, "
                    "training starts from step 0", ckpt_dir)
        shutil.rmtree(ckpt_dir)
    os.makedirs(ckpt_dir)
    atomic_write_json(Path(ckpt_dir, RECORD), record)


def resume(strategy: Any, engine: Any, ckpt_dir: str, record: dict[str, Any]) -> tuple[int, int]:
    """On every rank of a DeepSpeed training: (consumed_samples, step) of the checkpoint to go on from, loaded into
    ``engine``; (0, 0) when there is none of this training (rank 0 then clears the folder and records it)."""
    import torch.distributed as dist

    own = is_own(ckpt_dir, record)
    dist.barrier()  # every rank has looked before rank 0 changes anything
    if strategy.is_rank_0() and not own:
        reset(ckpt_dir, record)
    dist.barrier()
    if not own:
        return 0, 0
    load_path, states = strategy.load_ckpt(engine, ckpt_dir)
    if load_path is None:  # cannot happen after is_own unless the folder changed under us
        raise RuntimeError(f"the checkpoint in {ckpt_dir} could not be loaded; remove the folder to start over")
    step = int(engine.global_steps)
    log.warning("resuming from %s (step %d, %d samples consumed)", load_path, step, states["consumed_samples"])
    return int(states["consumed_samples"]), step


# Every optimizer step's logs, appended by rank 0 beside the checkpoints: a training resumed from step k reports the
# whole training (its steps, first loss, means), not only the part after k.
STEPS = "w2s_steps.jsonl"


def steps_before(ckpt_dir: str, step: int) -> list[dict[str, float]]:
    """The logs of steps 1..``step`` kept in ``ckpt_dir`` (those after the checkpoint were redone and are dropped;
    a last line cut short by a kill is not a step)."""
    rows: list[dict[str, float]] = []
    try:
        lines = (Path(ckpt_dir) / STEPS).read_text().splitlines()
    except OSError:
        return rows
    for line in lines[:step]:
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def finish(strategy: Any, ckpt_dir: str) -> None:
    """After the trained model is saved: its resumable state is no longer needed (rank 0 removes it)."""
    if strategy.is_rank_0():
        shutil.rmtree(ckpt_dir, ignore_errors=True)


# A finished training's output, kept for a rerun of its stage: the record of the training that wrote it, the
# output's content hash and the training's result. RLHF's reward model uses it: a stage stopped during PPO (a Slurm
# requeue) does not train its reward model again, and PPO goes on against the very same one.
FINISHED = "w2s-finished.json"


def mark_finished(output_dir: str | os.PathLike, record: dict[str, Any], result: dict[str, Any]) -> str:
    """Record that ``output_dir`` is the finished output of the training ``record`` describes; its sha256."""
    out = Path(output_dir)
    sha = HashCache(None).sha256(out)
    atomic_write_json(out.parent / f"{out.name}.{FINISHED}", {"record": record, "sha256": sha, "result": result})
    return sha


def finished_output(output_dir: str | os.PathLike, record: dict[str, Any]) -> dict[str, Any] | None:
    """The kept entry (``sha256``, ``result``) when ``output_dir`` is the finished output of ``record``'s training
    and still holds what it held then; None otherwise (never finished, another training's, or changed since)."""
    out = Path(output_dir)
    try:
        kept = json.loads((out.parent / f"{out.name}.{FINISHED}").read_text())
    except (OSError, ValueError):
        return None
    if kept.get("record") != record or not out.is_dir():
        return None
    if HashCache(None).sha256(out) != kept.get("sha256"):
        log.warning("%s changed since its training finished: it is trained again", out)
        return None
    return kept
