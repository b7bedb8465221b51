"""Where a run's metrics go besides ``metrics.jsonl``: TensorBoard scalars and a Weights & Biases run.

A :class:`~w2s.rundir.RunDir` is given its sinks (:func:`sinks_for` builds those the config asks for) and hands
each row's numbers to every one of them, step the round.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, Protocol

from omegaconf import OmegaConf


class MetricsSink(Protocol):
    def log(self, numbers: dict[str, float], step: int) -> None: ...


class TensorBoardSink:
    """Scalars in ``RUN_DIR/tensorboard/rounds``, written with TensorBoard's own event writer (opened on the first
    numbers): the driver never imports torch for it (torch's SummaryWriter writes the same events)."""

    def __init__(self, folder: Path):
        self.folder, self.writer = folder, None

    def log(self, numbers: dict[str, float], step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        if self.writer is None:
            self.writer = EventFileWriter(str(self.folder))
        values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in numbers.items()]
        self.writer.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
        self.writer.flush()


class WandbSink:
    """A W&B run (started on the first numbers) named after the run directory; resuming the run resumes it."""

    def __init__(self, run_dir: Path, cfg: Any):
        self.run_dir, self.cfg, self.run = run_dir, cfg, None

    def log(self, numbers: dict[str, float], step: int) -> None:
        import wandb

        if self.run is None:
            w = self.cfg.log.wandb
            self.run = wandb.init(project=w.project, entity=w.entity or None, mode=w.mode, dir=str(self.run_dir),
                                  name=self.run_dir.name,
                                  id="w2s-" + hashlib.sha256(str(self.run_dir).encode()).hexdigest()[:12],
                                  resume="allow", config=OmegaConf.to_container(self.cfg, resolve=True))
        self.run.log({**numbers, "round": step})


def sinks_for(run_dir: Path, cfg: Any) -> list[MetricsSink]:
    """The sinks ``cfg.log`` asks for: W&B when ``log.wandb.project`` is set, TensorBoard when ``log.tensorboard``."""
    sinks: list[MetricsSink] = []
    if cfg.log.wandb.project:
        sinks.append(WandbSink(run_dir, cfg))
    if cfg.log.tensorboard:
        sinks.append(TensorBoardSink(run_dir / "tensorboard" / "rounds"))
    return sinks
