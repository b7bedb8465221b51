"""The driver's console: one timestamped line per event (the live progress line is :mod:`w2s.progress`)."""

from __future__ import annotations

import time


def say(msg: str) -> None:
    """A progress line from the driver."""
    print(f"[w2s {time.strftime('%H:%M:%S')}] {msg}", flush=True)
