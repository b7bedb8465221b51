"""Live progress of the work a process is doing, and the one console line per stage that shows it.

Actor side: a work loop calls :func:`start` and :func:`update` (the generation engines per batch, the trainers per
optimizer step); nothing else is needed, since an actor's liveness ``ping``, answered on a concurrency group of its
own while the work runs, returns :func:`snapshot`. Driver side: :func:`w2s.cluster.wait_all` hands the snapshots
of the actors it waits on to :class:`LiveLine`, which sums them into one line: rewritten in place on a terminal,
printed every ``NON_TTY_INTERVAL_S`` otherwise (a log file gets a few lines per stage, not a bar per batch).
"""

from __future__ import annotations

import sys
import time
from typing import Any

_STATE: dict[str, Any] = {}
NON_TTY_INTERVAL_S = 30.0
ENABLED = True  # log.progress: the driver's progress lines


def start(total: int | None, unit: str) -> None:
    """New work of ``total`` items (None: unknown) counted in ``unit`` (rows, steps)."""
    _STATE.clear()
    _STATE.update(total=total, unit=unit, done=0, started=time.monotonic())


def update(done: int | None = None, **numbers: float) -> None:
    """Items done so far and running numbers (``tokens``: generated so far; ``loss``: the last step's)."""
    if not _STATE:
        start(None, "")
    if done is not None:
        _STATE["done"] = done
    _STATE.update(numbers)


def snapshot() -> dict[str, Any]:
    """What this process is doing now (empty when it has reported nothing)."""
    if not _STATE:
        return {}
    return {k: v for k, v in _STATE.items() if k != "started"} | {"elapsed": time.monotonic() - _STATE["started"]}


def describe(snapshots: list[dict[str, Any]]) -> str:
    """``12/16 rows, 240 tokens/s, ETA 5 s`` for the actors of one stage (their counts summed)."""
    snaps = [s for s in snapshots if s]
    if not snaps:
        return ""
    done = sum(int(s.get("done") or 0) for s in snaps)
    totals = [s.get("total") for s in snaps]
    total = sum(int(t) for t in totals) if all(t is not None for t in totals) else None
    unit = next((s["unit"] for s in snaps if s.get("unit")), "")
    elapsed = max(float(s.get("elapsed") or 0.0) for s in snaps)
    parts = [f"{done}/{total} {unit}" if total is not None else f"{done} {unit}".strip()]
    tokens = sum(float(s.get("tokens") or 0.0) for s in snaps)
    if tokens and elapsed > 0:
        parts.append(f"{tokens / elapsed:.0f} tokens/s")
    samples = sum(float(s.get("samples") or 0.0) for s in snaps)
    if samples and elapsed > 0:
        parts.append(f"{samples / elapsed:.2f} samples/s")
    losses = [float(s["loss"]) for s in snaps if s.get("loss") is not None]
    if losses:
        parts.append(f"loss {sum(losses) / len(losses):.4f}")
    if total and 0 < done < total:
        parts.append(f"ETA {elapsed / done * (total - done):.0f} s")
    return ", ".join(parts)


class LiveLine:
    """One progress line for one stage of work (``what``)."""

    def __init__(self, what: str, stream: Any = None):
        self.what, self.stream = what, stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_text, self.last_print = "", time.monotonic()
        self.shown = False

    def show(self, snapshots: list[dict[str, Any]]) -> None:
        if not ENABLED:
            return
        text = describe(snapshots)
        if not text or text == self.last_text:
            return
        self.last_text = text
        line = f"[w2s {time.strftime('%H:%M:%S')}] {self.what}: {text}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
            self.stream.flush()
            self.shown = True
        elif time.monotonic() - self.last_print >= NON_TTY_INTERVAL_S:
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_print = time.monotonic()

    def close(self) -> None:
        """End the live line (the stage's own summary line follows it)."""
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False
