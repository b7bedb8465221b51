"""Dispatch declared beside the worker method: every method the driver calls on a role group says how it is spread
over the ranks, and row requests split into contiguous shards."""

from __future__ import annotations

import inspect

import pytest

from w2s.cluster import RoleActorMixin
from w2s.workers.corrector import CorrectorWorker
from w2s.workers.dispatch import Dispatch, dispatch_of, register, shard
from w2s.workers.generator import GeneratorWorker
from w2s.workers.interpreter import InterpreterWorker
from w2s.workers.judge import JudgeWorker
from w2s.workers.requests import Correct, Generate
from w2s.workers.trainer import TrainerWorker

# Called on one actor's handle, outside RoleGroup.call: the liveness ping, the placement record at start, and the
# trainer world's two-step rendezvous (rank 0 first, then every rank with its own rank).
DIRECT = {"ping", "where", "rendezvous", "join"}


@pytest.mark.parametrize("worker", [GeneratorWorker, CorrectorWorker, InterpreterWorker, JudgeWorker, TrainerWorker])
def test_every_public_worker_method_declares_its_dispatch(worker):
    for name, method in inspect.getmembers(worker, inspect.isfunction):
        if not name.startswith("_") and name not in DIRECT:
            dispatch_of(method)  # raises, naming the method, when it declares none


def test_a_method_without_a_declared_dispatch_cannot_be_called_on_a_group():
    class Worker(RoleActorMixin):
        def undeclared(self):
            pass

    with pytest.raises(TypeError, match=r"Worker.undeclared declares no dispatch"):
        dispatch_of(Worker.undeclared)
    assert dispatch_of(register(Dispatch.ROWS)(lambda self, request: None)) is Dispatch.ROWS


def test_a_row_request_splits_into_contiguous_shards_keeping_its_other_fields():
    parts = shard(Generate(prompts=list("abcdefg"), seed=3, sampling={"temperature": 0.5}), 3)
    assert [p.prompts for p in parts] == [["a", "b"], ["c", "d"], ["e", "f", "g"]]
    assert {(p.seed, p.sampling["temperature"]) for p in parts} == {(3, 0.5)}
    assert [p.pairs for p in shard(Correct(pairs=[("q", "a")]), 2)] == [[], [("q", "a")]]  # an idle rank: no rows
