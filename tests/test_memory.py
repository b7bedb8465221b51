"""w2s.memory: peak memory of a process tree, and of the whole machine while a block runs (`w2s bench loop`)."""

from __future__ import annotations

import itertools
import time

from w2s.memory import MachineMemory, tree_peak_mb


def test_the_machine_sampler_keeps_the_first_value_and_the_highest_until_the_block_ends(monkeypatch):
    readings = itertools.chain([1.0, 3.5, 2.0], itertools.repeat(1.5))
    monkeypatch.setattr(MachineMemory, "used_gib", staticmethod(lambda: next(readings)))
    with MachineMemory(every_s=0.01) as memory:
        time.sleep(0.2)  # several samples: 3.5 among them
    assert (memory.before, memory.peak) == (1.0, 3.5)
    assert not memory._thread.is_alive()  # stopped with the block


def test_the_machine_sampler_reads_the_real_machine():
    with MachineMemory(every_s=0.01) as memory:
        block = bytearray(64 * 2**20)  # touched: resident
        time.sleep(0.05)
    assert memory.before > 0 and len(block)
    assert tree_peak_mb() >= 64  # this process's own peak holds the 64 MiB block
